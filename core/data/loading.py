"""From a dataset spec to ``DataSplits``: load, carve the validation split, limit, measure."""

from __future__ import annotations

from pathlib import Path

import torch

from core.data.base import DATASETS, DatasetError, DataSplits, RawData, Split
from core.spec import DatasetSpec

STD_FLOOR = 1e-6  # a constant channel (a blank border, a padded signal) must not divide by zero
_STATS_CHUNK = 1 << 22  # elements per float64 chunk: bounded memory on CIFAR-sized sets


def load_dataset(spec: DatasetSpec, data_root: Path, seed: int) -> DataSplits:
    """Load the dataset ``spec`` names, with its three splits and training statistics.

    - ``val``: the source's own validation split when it has one (an image folder's ``val/``, an
      archive's ``x_val``/``y_val``); otherwise ``spec.val_fraction`` of the training split,
      stratified by class and drawn with a generator seeded by ``seed``; when ``val_fraction`` is 0,
      ``val`` *is* the test split (same tensors), so model selection then looks at test data.
    - ``train``: what remains, then at most ``spec.train_limit`` rows (a stratified random subset,
      drawn after the validation split, so the validation rows never depend on the limit).
    - ``mean``/``std``: per channel (one value for 1-D signals) over the final training split, in
      raw units (0..255 for uint8 images), population std floored at ``STD_FLOOR``.

    The same spec, data and seed always give the same splits. Row order within a split follows the
    source (it may be grouped by class: shuffle when training).
    """
    raw, train, val = _split(spec, data_root, seed)
    mean, std = channel_stats(train.x)
    return DataSplits(
        name=raw.name,
        train=train,
        val=val,
        test=raw.test,
        num_classes=raw.num_classes,
        input_shape=tuple(train.x.shape[1:]),
        mean=mean,
        std=std,
        classes=raw.classes,
    )


def load_inputs(spec: DatasetSpec, data_root: Path, seed: int) -> torch.Tensor:
    """The training inputs of ``load_dataset(spec, data_root, seed)`` alone (an unlabelled pool).

    The validation rows are left out exactly as ``load_dataset`` leaves them out for the same seed,
    so a pool drawn from the job's own dataset never leaks validation inputs into training.
    """
    return _split(spec, data_root, seed)[1].x


def _split(spec: DatasetSpec, data_root: Path, seed: int) -> tuple[RawData, Split, Split]:
    raw = DATASETS.get(spec.kind)(spec, Path(data_root))
    gen = torch.Generator().manual_seed(seed)
    train = raw.train
    if raw.val is not None:
        val = raw.val
    elif spec.val_fraction > 0:
        if len(train) < 2:
            raise DatasetError(f"{raw.name}: {len(train)} training row(s) cannot give a validation split")
        n_val = min(max(1, round(len(train) * spec.val_fraction)), len(train) - 1)
        val_rows, train_rows = stratified_pick(train.y, n_val, gen)
        train, val = _rows(train, train_rows), _rows(train, val_rows)
    else:
        val = raw.test
    if spec.train_limit is not None and spec.train_limit < len(train):
        train = _rows(train, stratified_pick(train.y, spec.train_limit, gen)[0])
    return raw, train, val


def _rows(split: Split, rows: torch.Tensor) -> Split:
    return Split(split.x[rows], split.y[rows])


def stratified_pick(y: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of ``n`` rows drawn at random, each class in proportion to its size, and of the rest.

    Each class gets ``floor(n * count / total)`` rows, and the rows still owed go to the classes
    with the largest remainders, so exactly ``n`` are picked. Both index sets come back sorted.
    """
    total = len(y)
    if not 0 < n < total:
        raise ValueError(f"cannot pick {n} of {total} rows")
    order = torch.randperm(total, generator=gen)
    labels, counts = torch.unique(y, return_counts=True)
    quota = counts.double() * n / total
    take = quota.floor().long()
    owed = n - int(take.sum())
    # Each remainder is < 1 and they sum to `owed`, so the `owed` largest are all positive and
    # those classes still have a row to give.
    take[torch.argsort(quota - take, descending=True, stable=True)[:owed]] += 1

    # Group the shuffled rows by class (stable: shuffled within a class), then take each class's
    # first `take` rows.
    sorted_labels, by_class = torch.sort(y[order], stable=True)
    grouped = order[by_class]
    klass = torch.searchsorted(labels, sorted_labels)
    rank = torch.arange(total) - (torch.cumsum(counts, 0) - counts)[klass]
    picked = rank < take[klass]
    return grouped[picked].sort().values, grouped[~picked].sort().values


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std in float64; images (N, C, H, W), signals one channel."""
    flat = x.reshape(len(x), x.shape[1] if x.ndim == 4 else 1, -1)
    count = flat.shape[0] * flat.shape[2]
    rows = max(1, _STATS_CHUNK // max(1, flat[0].numel()))
    # Two passes (mean, then squared deviations) rather than sum and sum of squares: float inputs
    # far from zero would otherwise lose the variance to cancellation.
    total = torch.zeros(flat.shape[1], dtype=torch.float64)
    for chunk in flat.split(rows):
        total += chunk.double().sum(dim=(0, 2))
    mean = total / count
    squares = torch.zeros_like(mean)
    for chunk in flat.split(rows):
        squares += (chunk.double() - mean[None, :, None]).square().sum(dim=(0, 2))
    std = (squares / count).sqrt().clamp_min(STD_FLOOR)
    return tuple(mean.tolist()), tuple(std.tolist())
