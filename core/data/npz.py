"""Datasets stored as a NumPy ``.npz`` archive: ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Archives often come from users (``POST /v1/datasets``), so they are read without pickle and
checked thoroughly before anything trains on them. The rules live in the torch-free
``core.npz_format`` (the API checks uploads with it); here its errors become the engine's:
a bad archive is a ``DatasetError``, a missing one a ``DataMissingError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import npz_format
from core.data.base import DATASETS, DatasetError, RawData, Split, class_names, resolve_under
from core.data.samples import ArrayRows
from core.errors import DataMissingError
from core.spec import NpzData


@contextlib.contextmanager
def _engine_errors(path: Path) -> Iterator[None]:
    """The format's errors as the engine's: a missing archive, a bad one."""
    try:
        yield
    except FileNotFoundError:
        raise DataMissingError(f"dataset archive {path} does not exist (or is not a file)") from None
    except npz_format.NpzFormatError as e:
        raise DatasetError(str(e)) from None


def read_npz(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """The checked splits of an archive (``train``, ``test``, maybe ``val``) and the class count."""
    with _engine_errors(path):
        return npz_format.read_npz(path, label=str(path))


def validate_npz(path: Path) -> dict[str, Any]:
    """Check an archive without training on it; a JSON-ready summary, or a ``DatasetError``."""
    return npz_format.summarize(*read_npz(path))


@DATASETS.register("npz")
def load_npz(spec: NpzData, data_root: Path) -> RawData:
    """The archive's splits, inputs memory-mapped where the archive stores them uncompressed;
    uint8 inputs stay uint8, other numbers become float32 (per row, as they are read)."""
    path = resolve_under(data_root, spec.path)
    with _engine_errors(path):
        splits, num_classes, read_whole = npz_format.map_npz(path, label=str(path))
    parts = {}
    for name, (x, y) in splits.items():
        dtype = torch.uint8 if x.dtype == np.uint8 else torch.float32
        parts[name] = Split(ArrayRows(x, dtype), torch.from_numpy(y))
    raw = RawData("npz", parts["train"], parts["test"], class_names(num_classes), val=parts.get("val"))
    raw.read_whole = tuple(read_whole)
    return raw
