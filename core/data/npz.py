"""Datasets stored as a NumPy ``.npz`` archive: ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Archives often come from users (``POST /v1/datasets``), so they are read without pickle and
checked thoroughly before anything trains on them: each problem is a ``DatasetError`` that says
what is wrong and what is expected. ``validate_npz`` runs the same checks for the service.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.base import DATASETS, DatasetError, RawData, Split, class_names, resolve_under
from core.errors import DataMissingError
from core.spec import NpzData

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
VAL_KEYS = ("x_val", "y_val")  # optional: a validation split used instead of carving one
MAX_CLASSES = 100_000  # labels are class indices; a label of 10**9 is a mistake, not 10**9 classes
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float


def _open(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive, read without pickle."""
    if not path.is_file():
        raise DataMissingError(f"dataset archive {path} does not exist (or is not a file)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        # NumPy answers a pickle (or any non-NumPy file) with a ValueError when pickle is refused.
        raise DatasetError(
            f"{path.name} is not an .npz archive of plain arrays (pickled content is never loaded): "
            f"{type(e).__name__}"
        ) from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path.name} is a single .npy array, not an .npz archive")
    with loaded as archive:
        return _arrays(path, archive)


def _arrays(path: Path, archive: Any) -> dict[str, np.ndarray]:
    keys = list(archive.files)
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise DatasetError(
            f"{path.name} lacks array(s) {', '.join(missing)}; it holds: {', '.join(keys) or 'nothing'}. "
            f"A dataset archive needs {', '.join(REQUIRED_KEYS)} (optionally {', '.join(VAL_KEYS)})."
        )
    if (VAL_KEYS[0] in keys) != (VAL_KEYS[1] in keys):
        raise DatasetError(f"{path.name}: give both {' and '.join(VAL_KEYS)}, or neither")
    arrays = {}
    for key in [*REQUIRED_KEYS, *(k for k in VAL_KEYS if k in keys)]:
        try:
            arrays[key] = archive[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            if "Object arrays" in str(e):
                raise DatasetError(
                    f"{key} is an object array; those need pickle, which is refused. Store a numeric array."
                ) from e
            raise DatasetError(f"{key} in {path.name} cannot be read: {e}") from e
    return arrays


def _check_x(key: str, x: np.ndarray) -> np.ndarray:
    """Inputs as uint8 (kept) or float32, shaped (N, L) or (N, C, H, W)."""
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise DatasetError(f"{key} has dtype {x.dtype}; inputs must be numeric (uint8 images or floats)")
    if x.ndim == 3:  # (N, H, W): one-channel images
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise DatasetError(
            f"{key} has shape {x.shape}; expected (N, L) signals, (N, H, W) or (N, C, H, W) images"
        )
    if len(x) == 0:
        raise DatasetError(f"{key} is empty")
    if x.ndim == 4 and x.shape[1] > 16 and x.shape[3] in (1, 3, 4):
        raise DatasetError(
            f"{key} has shape {x.shape}, which looks channels-last (N, H, W, C); "
            "store images channels-first (N, C, H, W)"
        )
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise DatasetError(f"{key} contains {bad} NaN or infinite value(s) (as float32)")
    return x


def _check_y(key: str, y: np.ndarray, rows: int, x_key: str) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DatasetError(
            f"{key} has shape {y.shape} and dtype {y.dtype}; labels must be a 1-D integer array "
            "of class indices"
        )
    if len(y) != rows:
        raise DatasetError(f"{x_key} has {rows} rows but {key} has {len(y)}; they must match")
    if len(y) and int(y.min()) < 0:
        raise DatasetError(f"{key} has negative labels (min {int(y.min())}); labels must be 0, 1, 2, ...")
    if len(y) and int(y.max()) >= MAX_CLASSES:
        raise DatasetError(f"{key} has label {int(y.max())}; labels are class indices below {MAX_CLASSES}")
    return y.astype(np.int64)


def read_npz(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """The checked splits of an archive (``train``, ``test``, maybe ``val``) and the class count."""
    arrays = _open(Path(path))
    splits = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x = _check_x(f"x_{split}", arrays[f"x_{split}"])
        y = _check_y(f"y_{split}", arrays[f"y_{split}"], len(x), f"x_{split}")
        splits[split] = (x, y)
    shape = splits["train"][0].shape[1:]
    for split, (x, _y) in splits.items():
        if x.shape[1:] != shape or x.dtype != splits["train"][0].dtype:
            raise DatasetError(
                f"x_{split} samples are {x.shape[1:]} {x.dtype} but x_train samples are "
                f"{shape} {splits['train'][0].dtype}; every split must share one sample shape and dtype"
            )
    num_classes = 1 + max(int(y.max()) for _x, y in splits.values())
    if num_classes < 2:
        raise DatasetError("every label is 0: a classifier needs at least two classes")
    return splits, num_classes


def validate_npz(path: Path) -> dict[str, Any]:
    """Check an archive without training on it; a JSON-ready summary, or a ``DatasetError``."""
    splits, num_classes = read_npz(path)
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


@DATASETS.register("npz")
def load_npz(spec: NpzData, data_root: Path) -> RawData:
    """The archive's splits; uint8 inputs stay uint8, other numbers become float32."""
    splits, num_classes = read_npz(resolve_under(data_root, spec.path))
    tensors = {name: Split(torch.from_numpy(x), torch.from_numpy(y)) for name, (x, y) in splits.items()}
    return RawData("npz", tensors["train"], tensors["test"], class_names(num_classes), val=tensors.get("val"))
