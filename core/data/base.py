"""What every dataset loader returns: raw tensors split three ways, with their statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.samples import Samples
from core.errors import SpecError
from core.registry import Registry


@dataclass
class Split:
    """Raw inputs and integer labels: ``x`` uint8 (grey levels) or float32 (anything else), ``y`` int64.

    ``x`` is a tensor, or ``Samples`` read per row when the dataset streams (``core.data.samples``).
    """

    x: torch.Tensor | Samples
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class LoaderChoice:
    """How a dataset is read: ``memory`` (decoded once into tensors) or ``stream`` (per sample
    through a DataLoader with ``workers`` processes), why, and the figures behind the choice."""

    mode: str
    reason: str
    decoded_bytes: int
    budget_bytes: int
    workers: int = 0


@dataclass
class DataSplits:
    """A dataset ready for training.

    ``input_shape`` is one sample's shape: ``(length,)`` for 1-D signals, ``(C, H, W)`` for images.
    ``mean`` and ``std`` are per channel (one value for 1-D data), in raw units, computed on the
    training split; models normalize with them, so exported models take raw inputs.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] = field(default_factory=list)
    loader: LoaderChoice | None = None

    @property
    def streams(self) -> bool:
        return isinstance(self.train.x, Samples)

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


@dataclass
class RawData:
    """What a registered loader returns: the source's own splits, before carving and statistics.

    ``val`` is set only when the source ships a validation split (an ``val/`` image folder, an
    archive's ``x_val``); otherwise ``load_dataset`` carves one from ``train``.
    """

    name: str
    train: Split
    test: Split
    classes: list[str]
    val: Split | None = None
    read_whole: tuple[str, ...] = ()  # arrays that could not be mapped from their file (compressed)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class DatasetError(SpecError):
    """The dataset the spec names exists but cannot be used as it is (bad archive, bad folder)."""

    type = "bad_dataset"


# A loader turns one dataset spec (its ``kind`` picks the loader) and the data root into raw splits.
Loader = Callable[[Any, Path], RawData]

DATASETS: Registry[Loader] = Registry("dataset")


def resolve_under(data_root: Path, relative: str) -> Path:
    """``data_root / relative``, refused when it resolves outside the data root.

    The spec already refuses absolute paths and ``..``; resolving also catches symbolic links
    that point elsewhere, so a spec can only ever read what the operator put under the root.
    """
    root = Path(data_root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise SpecError(f"path {relative!r} resolves to {path}, outside the data root {root}")
    return path


def class_names(num_classes: int) -> list[str]:
    """Names for classes known only by their index."""
    return [str(i) for i in range(num_classes)]
