"""core.npz_format (NumPy only, used by the API) accepts and refuses exactly what the engine's
loader (core.data.npz, with torch) does, with the same messages."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from core.npz_format import BadArrayError, MissingArrayError, NotAnArchiveError, NpzFormatError, check_npz
from tests.api.npz_cases import BAD_NPZ, npz_bytes


def test_good_archive_summary_matches_the_engine(tmp_path: Path) -> None:
    validate_npz = pytest.importorskip("core.data").validate_npz
    path = tmp_path / "data.npz"
    path.write_bytes(npz_bytes())
    assert check_npz(path) == validate_npz(path)
    signals = np.linspace(0, 1, 30 * 5).reshape(30, 5)
    path.write_bytes(npz_bytes(x_train=signals, x_test=signals[:9], x_val=signals[:4], y_val=np.arange(4)))
    summary = check_npz(path)
    assert summary == validate_npz(path)
    assert summary["dtype"] == "float32" and summary["val_size"] == 4 and summary["num_classes"] == 4


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_archives_fail_the_same_way(tmp_path: Path, case: str) -> None:
    core_data = pytest.importorskip("core.data")
    data, array, _message = BAD_NPZ[case]
    path = tmp_path / "data.npz"
    path.write_bytes(data)
    with pytest.raises(core_data.DatasetError) as engine:
        core_data.validate_npz(path)
    with pytest.raises(NpzFormatError) as ours:
        check_npz(path)
    # the engine names the archive by its full path, the API by the file name
    assert str(engine.value) == str(ours.value).replace("data.npz", str(path), 1)
    assert (ours.value.array or "file") == array


def test_error_classes_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(NotAnArchiveError):
        check_npz(path, label="upload.npz")
    path.write_bytes(npz_bytes(y_test=None))
    with pytest.raises(MissingArrayError) as missing:
        check_npz(path, label="upload.npz")
    assert str(missing.value).startswith("upload.npz lacks array(s) y_test")
    path.write_bytes(npz_bytes(y_train=np.zeros(30)))
    with pytest.raises(BadArrayError, match="y_train"):
        check_npz(path)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x_train=np.zeros((1000, 100)), y_train=np.zeros(1000, int))
    path.write_bytes(buffer.getvalue())
    with pytest.raises(NotAnArchiveError, match="unpacks to"):
        check_npz(path, max_bytes=100_000)
    with pytest.raises(FileNotFoundError):
        check_npz(tmp_path / "absent.npz")
    assert isinstance(NpzFormatError("x"), ValueError)
