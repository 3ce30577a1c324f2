"""The ``.npz`` dataset archive format, checked with NumPy alone (no torch).

An archive holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally ``x_val`` with
``y_val``. Archives often come from users (``POST /v1/datasets``), so they are read without
pickle and checked thoroughly: each problem is an ``NpzFormatError`` (a ``ValueError``) that
names the array and says what is expected. The API checks uploads with ``check_npz``; the
engine's loader reads the same checked arrays with ``read_npz``, so both accept exactly the
same archives.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
VAL_KEYS = ("x_val", "y_val")  # optional: a validation split used instead of carving one
MAX_CLASSES = 100_000  # labels are class indices; a label of 10**9 is a mistake, not 10**9 classes
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float

Splits = dict[str, tuple[np.ndarray, np.ndarray]]


class NpzFormatError(ValueError):
    """The archive cannot be used as a dataset; ``array`` names the offending array, if one."""

    type = "bad_dataset"

    def __init__(self, message: str, array: str | None = None) -> None:
        super().__init__(message)
        self.array = array


class NotAnArchiveError(NpzFormatError):
    """Not an ``.npz`` archive of plain arrays (a pickle, a single ``.npy``, anything else)."""


class MissingArrayError(NpzFormatError):
    """A required array is absent, or only half of the optional validation pair is given."""


class BadArrayError(NpzFormatError):
    """An array is present but has the wrong dtype, shape, length or values."""


def _open(path: Path, label: str, max_bytes: int | None) -> dict[str, np.ndarray]:
    """Every array the format uses, read without pickle."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset archive {path} does not exist (or is not a file)")
    if max_bytes is not None:
        _check_unpacked_size(path, label, max_bytes)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        # NumPy answers a pickle (or any non-NumPy file) with a ValueError when pickle is refused.
        raise NotAnArchiveError(
            f"{label} is not an .npz archive of plain arrays (pickled content is never loaded): "
            f"{type(e).__name__}"
        ) from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise NotAnArchiveError(f"{label} is a single .npy array, not an .npz archive")
    with loaded as archive:
        return _arrays(label, archive)


def _check_unpacked_size(path: Path, label: str, max_bytes: int) -> None:
    """Refuse an archive whose arrays would unpack to more than ``max_bytes`` (a zip bomb)."""
    try:
        with zipfile.ZipFile(path) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: np.load says what it is
    if unpacked > max_bytes:
        raise NotAnArchiveError(
            f"{label} unpacks to {unpacked} bytes of arrays, more than the {max_bytes} allowed"
        )


def _arrays(label: str, archive: Any) -> dict[str, np.ndarray]:
    keys = list(archive.files)
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise MissingArrayError(
            f"{label} lacks array(s) {', '.join(missing)}; it holds: {', '.join(keys) or 'nothing'}. "
            f"A dataset archive needs {', '.join(REQUIRED_KEYS)} (optionally {', '.join(VAL_KEYS)}).",
            missing[0],
        )
    if (VAL_KEYS[0] in keys) != (VAL_KEYS[1] in keys):
        absent = VAL_KEYS[1] if VAL_KEYS[0] in keys else VAL_KEYS[0]
        raise MissingArrayError(f"{label}: give both {' and '.join(VAL_KEYS)}, or neither", absent)
    arrays = {}
    for key in [*REQUIRED_KEYS, *(k for k in VAL_KEYS if k in keys)]:
        try:
            arrays[key] = archive[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            if "Object arrays" in str(e):
                raise BadArrayError(
                    f"{key} is an object array; those need pickle, which is refused. Store a numeric array.",
                    key,
                ) from e
            raise BadArrayError(f"{key} in {label} cannot be read: {e}", key) from e
    return arrays


def _check_x(key: str, x: np.ndarray) -> np.ndarray:
    """Inputs as uint8 (kept) or float32, shaped (N, L) or (N, C, H, W)."""
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise BadArrayError(
            f"{key} has dtype {x.dtype}; inputs must be numeric (uint8 images or floats)", key
        )
    if x.ndim == 3:  # (N, H, W): one-channel images
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise BadArrayError(
            f"{key} has shape {x.shape}; expected (N, L) signals, (N, H, W) or (N, C, H, W) images", key
        )
    if len(x) == 0:
        raise BadArrayError(f"{key} is empty", key)
    if x.ndim == 4 and x.shape[1] > 16 and x.shape[3] in (1, 3, 4):
        raise BadArrayError(
            f"{key} has shape {x.shape}, which looks channels-last (N, H, W, C); "
            "store images channels-first (N, C, H, W)",
            key,
        )
    if x.dtype != np.uint8:
        # The finiteness check runs on the float32 values the engine trains on: a float64 of
        # 1e39 is finite, but not once converted.
        x = x.astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise BadArrayError(f"{key} contains {bad} NaN or infinite value(s) (as float32)", key)
    return x


def _check_y(key: str, y: np.ndarray, rows: int, x_key: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise BadArrayError(
            f"{key} has shape {y.shape} and dtype {y.dtype}; labels must be a 1-D integer array "
            "of class indices",
            key,
        )
    if len(y) != rows:
        raise BadArrayError(f"{x_key} has {rows} rows but {key} has {len(y)}; they must match", key)
    if len(y) and int(y.min()) < 0:
        raise BadArrayError(
            f"{key} has negative labels (min {int(y.min())}); labels must be 0, 1, 2, ...", key
        )
    if len(y) and int(y.max()) >= MAX_CLASSES:
        raise BadArrayError(
            f"{key} has label {int(y.max())}; labels are class indices below {MAX_CLASSES}", key
        )
    return y.astype(np.int64)


def read_npz(
    path: str | Path, *, label: str | None = None, max_bytes: int | None = None
) -> tuple[Splits, int]:
    """The checked splits (``train``, ``test``, maybe ``val``) and the class count.

    Inputs come back as uint8 (kept as stored) or float32, with a channel axis added to
    (N, H, W) images; labels as int64. ``label`` names the archive in messages (default: its
    file name); ``max_bytes`` caps the arrays' unpacked size. Raises ``NpzFormatError`` for a bad
    archive, ``FileNotFoundError`` for none.
    """
    path = Path(path)
    label = label or path.name
    arrays = _open(path, label, max_bytes)
    splits: Splits = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x = _check_x(f"x_{split}", arrays[f"x_{split}"])
        y = _check_y(f"y_{split}", arrays[f"y_{split}"], len(x), f"x_{split}")
        splits[split] = (x, y)
    shape, dtype = splits["train"][0].shape[1:], splits["train"][0].dtype
    for split, (x, _y) in splits.items():
        if x.shape[1:] != shape or x.dtype != dtype:
            raise BadArrayError(
                f"x_{split} samples are {x.shape[1:]} {x.dtype} but x_train samples are "
                f"{shape} {dtype}; every split must share one sample shape and dtype",
                f"x_{split}",
            )
    num_classes = 1 + max(int(y.max()) for _x, y in splits.values())
    if num_classes < 2:
        raise BadArrayError("every label is 0: a classifier needs at least two classes", "y_train")
    return splits, num_classes


def summarize(splits: Splits, num_classes: int) -> dict[str, Any]:
    """A JSON-ready description of checked splits."""
    x_train, y_train = splits["train"]
    return {
        "train_size": len(x_train),
        "val_size": len(splits["val"][0]) if "val" in splits else None,
        "test_size": len(splits["test"][0]),
        "input_shape": list(x_train.shape[1:]),
        "dtype": str(x_train.dtype),
        "num_classes": num_classes,
        "train_class_counts": np.bincount(y_train, minlength=num_classes).tolist(),
    }


def check_npz(path: str | Path, *, label: str | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """Check an archive without training on it; its summary, or an ``NpzFormatError``."""
    return summarize(*read_npz(path, label=label, max_bytes=max_bytes))
