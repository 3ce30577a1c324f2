"""MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN, read by torchvision from ``<data root>/<folder>``.

Nothing is downloaded unless the spec says ``download: true``. The arrays are taken whole from
the dataset objects (``.data``, ``.targets``, ``.labels``): no per-image PIL round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import torch

from core.data.base import DATASETS, DatasetError, RawData, Split, class_names, resolve_under
from core.data.samples import ArrayRows
from core.errors import DataMissingError
from core.spec import TorchvisionData


@dataclass(frozen=True)
class _Source:
    """How to open one torchvision dataset and which files it needs under its root."""

    cls_name: str  # the class in torchvision.datasets
    files: Callable[[Any], list[str]]  # expected files, relative to the root, from the class
    split_arg: Callable[[bool], dict[str, Any]]  # constructor keywords selecting train or test


def _mnist_files(cls: Any) -> list[str]:
    # torchvision checks for the uncompressed idx files (it unpacks the .gz it downloads).
    return [f"{cls.__name__}/raw/{Path(name).stem}" for name, _md5 in cls.resources]


def _cifar_files(cls: Any) -> list[str]:
    names = [name for name, _md5 in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [f"{cls.base_folder}/{name}" for name in names]


def _svhn_files(cls: Any) -> list[str]:
    return [cls.split_list[split][1] for split in ("train", "test")]


def _train_flag(train: bool) -> dict[str, Any]:
    return {"train": train}


def _svhn_split(train: bool) -> dict[str, Any]:
    return {"split": "train" if train else "test"}


_SOURCES = {
    "mnist": _Source("MNIST", _mnist_files, _train_flag),
    "fashion_mnist": _Source("FashionMNIST", _mnist_files, _train_flag),
    "cifar10": _Source("CIFAR10", _cifar_files, _train_flag),
    "cifar100": _Source("CIFAR100", _cifar_files, _train_flag),
    "svhn": _Source("SVHN", _svhn_files, _svhn_split),
}


def expected_files(kind: str, root: Path) -> list[Path]:
    """The files torchvision needs for ``kind`` under ``root`` (the dataset's folder)."""
    from torchvision import datasets

    source = _SOURCES[kind]
    return [root / name for name in source.files(getattr(datasets, source.cls_name))]


def _missing_message(kind: str, root: Path, download: bool, error: BaseException) -> str:
    files = expected_files(kind, root)
    absent = [f for f in files if not f.is_file()]
    if absent and not download:
        head = f"dataset {kind!r} not found: {len(absent)} of {len(files)} expected files are missing"
    elif download:
        head = f"dataset {kind!r}: the download failed ({str(error).strip() or type(error).__name__})"
    else:  # every file is there, yet torchvision refused them (its checksum or format checks)
        head = f"dataset {kind!r}: files present but not the original ones ({str(error).strip()})"
    listing = "\n  ".join(f"{f}{'' if f.is_file() else '  (missing)'}" for f in files)
    return (
        f"{head}. Expected under {root}:\n  {listing}\n"
        "Place the original files there, or set `download: true` in the dataset spec to let "
        "torchvision fetch them."
    )


def _open(kind: str, root: Path, train: bool, download: bool) -> Any:
    from torchvision import datasets

    source = _SOURCES[kind]
    cls = getattr(datasets, source.cls_name)
    try:
        return cls(str(root), download=download, **source.split_arg(train))
    except (RuntimeError, URLError, OSError) as e:
        # torchvision's "Dataset not found or corrupted", or a failed download: name the files.
        raise DataMissingError(_missing_message(kind, root, download, e)) from e
    except (AssertionError, ValueError, TypeError) as e:
        # The files exist but do not parse (a truncated or foreign idx file, for instance).
        raise DatasetError(f"dataset {kind!r} under {root} cannot be read: {e or type(e).__name__}") from e


def _images(dataset: Any) -> torch.Tensor:
    """The dataset's images as one contiguous uint8 tensor (N, C, H, W)."""
    data = dataset.data
    if isinstance(data, torch.Tensor):  # MNIST family: (N, H, W)
        return data.to(torch.uint8).unsqueeze(1).contiguous()
    array = np.asarray(data, dtype=np.uint8)
    if type(dataset).__name__ == "SVHN":  # already (N, C, H, W)
        return torch.from_numpy(np.ascontiguousarray(array))
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))  # CIFAR: (N, H, W, C)


def _labels(dataset: Any) -> torch.Tensor:
    labels = dataset.labels if hasattr(dataset, "labels") else dataset.targets
    return torch.as_tensor(np.asarray(labels), dtype=torch.int64)


@DATASETS.register(*_SOURCES)
def load_torchvision(spec: TorchvisionData, data_root: Path) -> RawData:
    """The standard train/test split of a torchvision dataset, images uint8 (N, C, H, W)."""
    root = resolve_under(data_root, spec.folder or spec.kind)
    # CIFAR's batches are pickles; torchvision unpickles them only after their MD5 matched the
    # published archive, so no file a user crafted is ever unpickled here.
    train_set = _open(spec.kind, root, train=True, download=spec.download)
    test_set = _open(spec.kind, root, train=False, download=spec.download)
    # the arrays are in memory already (torchvision reads them whole); rows are copied out per
    # sample only when streaming, for the per-sample transforms
    train = Split(ArrayRows(_images(train_set).numpy(), torch.uint8, spec.transforms), _labels(train_set))
    test = Split(ArrayRows(_images(test_set).numpy(), torch.uint8, spec.transforms), _labels(test_set))
    classes = [str(c) for c in getattr(train_set, "classes", [])] or class_names(10)
    return RawData(spec.kind, train, test, classes)
