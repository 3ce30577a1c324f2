"""Datasets that need no files: MNIST-1D (generated), scikit-learn's digits (shipped), synthetic images."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.data.base import DATASETS, RawData, Split, class_names
from core.spec import DigitsData, MNIST1DData, SyntheticData

# ---------------------------------------------------------------- MNIST-1D


@lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Imported here: the package pulls in matplotlib, which costs a second at import time.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if seed is not None:
        args.seed = seed
    # The generator seeds the global `random` and NumPy states; put them back so that loading
    # a dataset never changes the randomness of the code around it.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)  # generated from templates: never the package's download path
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = (data["x"], data["y"], data["x_test"], data["y_test"])
    for a in arrays:
        a.setflags(write=False)  # cached: shared by every caller
    return arrays


def warm() -> None:
    """Generate the default MNIST-1D now, into this process's cache: a process that forks the
    engine's runs (``worker.engine_server``) pays for it once, not once per job."""
    _mnist1d_arrays(MNIST1DData().seed)


@DATASETS.register("mnist1d")
def load_mnist1d(spec: MNIST1DData, data_root: Path) -> RawData:
    """The package's own 4000/1000 split of 40-point signals, float32."""
    x, y, x_test, y_test = _mnist1d_arrays(spec.seed)
    train = Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64))
    test = Split(torch.tensor(x_test, dtype=torch.float32), torch.tensor(y_test, dtype=torch.int64))
    return RawData("mnist1d", train, test, class_names(10))


# ---------------------------------------------------------------- digits


@DATASETS.register("digits")
def load_digits(spec: DigitsData, data_root: Path) -> RawData:
    """8x8 images with values 0..16 kept as float32 (N, 1, 8, 8); stratified train/test split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch: Any = sklearn_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=spec.test_fraction, random_state=spec.split_seed, stratify=labels
    )
    train = Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr))
    test = Split(torch.from_numpy(x_te), torch.from_numpy(y_te))
    return RawData("digits", train, test, class_names(10))


# ---------------------------------------------------------------- synthetic images

# Weight of each class's own pattern against the pattern all classes share: classes overlap, so
# the task is learnable but not trivial: at the defaults (10 classes, 32x32, noise 1) a linear
# model on raw pixels reaches ~95 % and a nearest-class-mean rule ~50 %, as random shifts defeat
# pixel matching; noise 2 brings the linear model down to ~75 %.
_CLASS_WEIGHT = 0.4
_PIXEL_SCALE = 40.0  # template std in grey levels, around a mid-grey of 128


def _templates(spec: SyntheticData, padded: int, gen: torch.Generator) -> torch.Tensor:
    """One smooth pattern per class, (K, C, padded, padded), zero mean and unit std overall."""
    grid = max(2, padded // 8)  # a coarse random grid, upsampled: low spatial frequencies only
    shape = (spec.channels, grid, grid)
    shared = torch.randn((1, *shape), generator=gen)
    own = torch.randn((spec.num_classes, *shape), generator=gen)
    smooth = F.interpolate(
        shared + _CLASS_WEIGHT * own, size=(padded, padded), mode="bilinear", align_corners=False
    )
    return (smooth - smooth.mean()) / smooth.std()


def _draw(templates: torch.Tensor, n: int, spec: SyntheticData, gen: torch.Generator) -> Split:
    """``n`` balanced samples: a template cropped at a random shift, plus noise, as uint8."""
    k, c, padded, _ = templates.shape
    size, margin = spec.size, (padded - spec.size) // 2
    y = (torch.arange(n) % k)[torch.randperm(n, generator=gen)]
    offsets = torch.randint(0, 2 * margin + 1, (2, n), generator=gen)
    pixels = torch.arange(size)
    rows = (offsets[0, :, None] + pixels)[:, None, :, None]
    cols = (offsets[1, :, None] + pixels)[:, None, None, :]
    x = templates[y[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    x.add_(torch.randn(x.shape, generator=gen), alpha=spec.noise)
    # +0.5 then truncation rounds to the nearest grey level once clamped to [0, 255].
    x.mul_(_PIXEL_SCALE).add_(128.5).clamp_(0, 255)
    return Split(x.to(torch.uint8), y)


@DATASETS.register("synthetic")
def load_synthetic(spec: SyntheticData, data_root: Path) -> RawData:
    """Class-conditional images (N, C, size, size) uint8, fully determined by ``spec.seed``."""
    gen = torch.Generator().manual_seed(spec.seed)
    margin = max(1, spec.size // 4)  # shifts of up to a quarter of the image each way
    templates = _templates(spec, spec.size + 2 * margin, gen)
    train = _draw(templates, spec.train_size, spec, gen)
    test = _draw(templates, spec.test_size, spec, gen)
    return RawData("synthetic", train, test, class_names(spec.num_classes))
