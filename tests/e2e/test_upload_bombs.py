"""Dataset archives that unpack to far more than they weigh, sent to a real API process: each is
refused or checked in bounded memory, and the API's peak memory barely moves."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.service import Service, base_env

GROWTH_BOUND = 64 << 20
"""How much the API's peak resident memory may grow while it checks any of these archives. The
check streams an archive in chunks of ``core.npz_format.CHUNK_BYTES``; loading it instead would
grow it by the archive's unpacked size, a gibibyte or more."""


def _npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _bomb(path: Path, unpacked: int, *, header_shape: tuple[int, ...] | None = None) -> Path:
    """A valid-looking archive whose ``x_train`` is ``unpacked`` bytes of float32 zeros (about
    200 times smaller once deflated); its labels are all 0. ``header_shape`` makes the array's
    header lie about its shape."""
    rows = unpacked // (4 * 1024)
    small = {"y_train": np.zeros(rows, np.int64), "x_test": np.zeros((2, 1024), np.float32)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x_train.npy", "w", force_zip64=True) as f:
            f.write(_npy_header(header_shape or (rows, 1024), "<f4"))
            zeros = bytes(64 << 20)
            left = rows * 4 * 1024
            while left:
                f.write(zeros[: min(left, len(zeros))])
                left -= min(left, len(zeros))
        for key, array in {**small, "y_test": np.zeros(2, np.int64)}.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            zf.writestr(f"{key}.npy", buffer.getvalue())
    return path


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Service:
    home = tmp_path_factory.mktemp("bombs")
    svc = Service(env=base_env(home, DISTILLERY_MAX_UNPACKED_BYTES=str(1536 << 20)), home=home)
    svc.start_api()
    yield svc  # type: ignore[misc]
    svc.stop()


def _upload(api: Service, path: Path) -> tuple[int, dict[str, object], int]:
    """(status, body, growth of the API's peak memory)."""
    assert api.api is not None
    before = _peak_rss(api.api.pid)
    with path.open("rb") as f:
        answer = api.http.post("/v1/datasets", files={"file": (path.name, f, "application/octet-stream")})
    return answer.status_code, answer.json(), _peak_rss(api.api.pid) - before


@pytest.mark.slow
def test_an_archive_declaring_more_than_the_limit_is_refused_from_its_headers(
    api: Service, tmp_path: Path
) -> None:
    path = _bomb(tmp_path / "bomb.npz", 2 << 30)  # 2 GiB of zeros in about 10 MB
    assert path.stat().st_size < 20 << 20
    status, body, growth = _upload(api, path)
    assert status == 422, body
    assert "unpacks to" in str(body["detail"]) and str(1536 << 20) in str(body["detail"])
    assert growth < GROWTH_BOUND, growth


@pytest.mark.slow
def test_an_archive_under_the_limit_is_checked_in_bounded_memory(api: Service, tmp_path: Path) -> None:
    path = _bomb(tmp_path / "zeros.npz", 1 << 30)  # every byte is read, a chunk at a time
    status, body, growth = _upload(api, path)
    assert status == 422, body
    assert "every label is 0" in str(body["detail"])
    print(f"checking a 1 GiB archive grew the API's peak memory by {growth / 2**20:.1f} MiB")
    assert growth < GROWTH_BOUND, growth


def test_a_header_that_lies_about_its_shape_is_refused_before_reading_data(
    api: Service, tmp_path: Path
) -> None:
    path = _bomb(tmp_path / "liar.npz", 64 << 20, header_shape=(10, 1024))
    status, body, _growth = _upload(api, path)
    assert status == 422, body
    assert body["errors"][0]["field"] == "x_train"
    assert "header says shape (10, 1024)" in str(body["detail"])
