"""From a dataset spec to ``DataSplits``: load, carve the validation split, limit, measure."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.data.base import DATASETS, DatasetError, DataSplits, LoaderChoice, RawData, Split
from core.data.samples import Samples, default_workers
from core.spec import DatasetSpec

STD_FLOOR = 1e-6  # a constant channel (a blank border, a padded signal) must not divide by zero
_STATS_CHUNK = 1 << 22  # elements per float64 chunk: bounded memory on CIFAR-sized sets
STATS_ROWS = 4096  # a streamed training split's statistics come from this many rows, evenly spaced
BUDGET_ENV = "DISTILLERY_DATA_MEMORY_BYTES"
BUDGET_FRACTION = 0.25  # the default budget: this share of the machine's memory


def memory_budget() -> int:
    """Bytes of decoded data a job may hold in memory: ``DISTILLERY_DATA_MEMORY_BYTES``, else a
    quarter of the machine's physical memory."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        try:
            value = int(float(text))
        except ValueError:
            raise DatasetError(f"{BUDGET_ENV}={text!r} is not a number of bytes") from None
        if value < 0:
            raise DatasetError(f"{BUDGET_ENV}={text!r} must not be negative")
        return value
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * BUDGET_FRACTION)


def load_dataset(spec: DatasetSpec, data_root: Path, seed: int, budget: int | None = None) -> DataSplits:
    """Load the dataset ``spec`` names, with its three splits and training statistics.

    - ``val``: the source's own validation split when it has one (an image folder's ``val/``, an
      archive's ``x_val``/``y_val``); otherwise ``spec.val_fraction`` of the training split,
      stratified by class and drawn with a generator seeded by ``seed``; when ``val_fraction`` is 0,
      ``val`` *is* the test split (same tensors), so model selection then looks at test data.
    - ``train``: what remains, then at most ``spec.train_limit`` rows (a stratified random subset,
      drawn after the validation split, so the validation rows never depend on the limit).
    - ``mean``/``std``: per channel (one value for 1-D signals) over the final training split, in
      raw units (0..255 for uint8 images), population std floored at ``STD_FLOOR``.

    - the loader (``choose_loader``): ``memory`` decodes every split once into tensors, ``stream``
      leaves them as ``Samples`` read per row; ``budget`` defaults to ``memory_budget()``.

    The same spec, data and seed always give the same splits. Row order within a split follows the
    source (it may be grouped by class: shuffle when training).
    """
    raw, train, val = _split(spec, data_root, seed)
    splits = {"train": train, "val": val, "test": raw.test}
    choice = choose_loader(spec, raw, list(splits.values()), memory_budget() if budget is None else budget)
    decoded: dict[int, torch.Tensor] = {}  # val may be the test split itself: decode it once
    for split in splits.values():
        if isinstance(split.x, Samples):
            if choice.mode == "memory":
                split.x = decoded.setdefault(id(split.x), split.x.materialize())
            else:
                split.x.workers, split.x.seed = choice.workers, seed
    train, val = splits["train"], splits["val"]
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
        loader=choice,
    )


def choose_loader(spec: DatasetSpec, raw: RawData, splits: list[Split], budget: int) -> LoaderChoice:
    """Memory or streaming for this dataset, and why (the report records both)."""
    seen: set[int] = set()
    size = 0
    for split in splits:
        if id(split.x) not in seen:
            seen.add(id(split.x))
            x = split.x
            size += len(x) * x.row_bytes if isinstance(x, Samples) else x.element_size() * x.numel()
    lazy = any(isinstance(split.x, Samples) for split in splits)
    workers = spec.loader.workers if spec.loader.workers is not None else default_workers()
    transforms = getattr(spec, "transforms", "none")
    whole = (
        f"; {', '.join(raw.read_whole)} compressed, read whole (np.savez maps instead)"
        if raw.read_whole
        else ""
    )
    mode, reason = spec.loader.mode, ""
    if mode != "auto":
        reason = f"data.loader.mode is {mode}"
    elif not lazy:
        mode, reason = "memory", f"{spec.kind} is generated in memory"
    elif transforms != "none":
        mode, reason = "stream", f"transforms {transforms!r} are drawn per sample"
    elif size <= budget:
        mode, reason = "memory", f"the decoded dataset ({_gb(size)}) fits the memory budget ({_gb(budget)})"
    else:
        mode, reason = (
            "stream",
            f"the decoded dataset ({_gb(size)}) exceeds the memory budget ({_gb(budget)})",
        )
    if mode == "stream" and not lazy:
        mode, reason = "memory", f"{reason}, but {spec.kind} is generated in memory: nothing to stream"
    return LoaderChoice(mode, reason + whole, size, budget, workers if mode == "stream" else 0)


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def load_inputs(spec: DatasetSpec, data_root: Path, seed: int) -> torch.Tensor | Samples:
    """The training inputs of ``load_dataset(spec, data_root, seed)`` alone (an unlabelled pool).

    The validation rows are left out exactly as ``load_dataset`` leaves them out for the same seed,
    so a pool drawn from the job's own dataset never leaks validation inputs into training.
    Image files and archives come back as ``Samples`` (``materialize()`` decodes them).
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


def channel_stats(x: torch.Tensor | Samples) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std in float64; images (N, C, H, W), signals one channel.

    Of streamed ``Samples``: over ``STATS_ROWS`` rows evenly spaced through the split (all of them
    when there are fewer), decoded as evaluation reads them."""
    if isinstance(x, Samples):
        picked = torch.linspace(0, len(x) - 1, min(len(x), STATS_ROWS)).round().long().unique()
        view = x[picked]
        assert isinstance(view, Samples)
        x = view.materialize()
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
