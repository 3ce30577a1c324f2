"""Datasets stored as a NumPy ``.npz`` archive: ``x_train``, ``y_train``, ``x_test``, ``y_test``.

Archives often come from users (``POST /v1/datasets``), so they are read without pickle and
checked thoroughly before anything trains on them. The rules live in the torch-free
``core.npz_format`` (the API checks uploads with it); here its errors become the engine's:
a bad archive is a ``DatasetError``, a missing one a ``DataMissingError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import npz_format
from core.data.base import DATASETS, DatasetError, RawData, Split, class_names, resolve_under
from core.errors import DataMissingError
from core.spec import NpzData


def read_npz(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """The checked splits of an archive (``train``, ``test``, maybe ``val``) and the class count."""
    try:
        return npz_format.read_npz(path, label=str(path))
    except FileNotFoundError:
        raise DataMissingError(f"dataset archive {path} does not exist (or is not a file)") from None
    except npz_format.NpzFormatError as e:
        raise DatasetError(str(e)) from None


def validate_npz(path: Path) -> dict[str, Any]:
    """Check an archive without training on it; a JSON-ready summary, or a ``DatasetError``."""
    return npz_format.summarize(*read_npz(path))


@DATASETS.register("npz")
def load_npz(spec: NpzData, data_root: Path) -> RawData:
    """The archive's splits; uint8 inputs stay uint8, other numbers become float32."""
    splits, num_classes = read_npz(resolve_under(data_root, spec.path))
    tensors = {name: Split(torch.from_numpy(x), torch.from_numpy(y)) for name, (x, y) in splits.items()}
    return RawData("npz", tensors["train"], tensors["test"], class_names(num_classes), val=tensors.get("val"))
