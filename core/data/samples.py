"""Inputs that are read when they are used: image files decoded per sample, arrays mapped from disk.

A ``Samples`` stands where a split's input tensor would stand when the decoded dataset does not
fit the memory budget (``core.data.loading`` decides). It answers the few tensor operations the
engine uses on inputs, so the code around it does not care which one it holds:

- ``len(s)``, ``s.shape``, ``s.dtype``: as the decoded tensor's would be;
- ``s[a:b]`` (a slice): those rows decoded, as a tensor (a handful for an export sample);
- ``s[rows]`` (an index tensor): another ``Samples`` over those rows (carving splits, limits);
- ``s.split(n)``: every row in order, decoded ``n`` at a time by a ``DataLoader`` with worker
  processes (evaluation, prediction);
- ``s.to(device)`` / ``s.cpu()``: the same ``Samples``; rows travel when they are read.

Training reads rows through ``training_loader`` (``core.trainer``): its own batch order, the
per-sample training transforms, worker processes, pinned memory on CUDA and prefetching.

Per-sample randomness (a random crop, a flip) is drawn from a generator seeded by the job's seed,
the epoch and the row, never from a worker's state: a batch is the same whichever worker decoded
it, with any number of workers, and again after a resume.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from core.seeding import derive_seed

# Standard ImageNet-style evaluation: resize to size / 0.875, then the centre size x size.
EVAL_CROP = 0.875
CROP_SCALE = (
    0.35,
    1.0,
)  # random resized crop: area fraction kept (wider than ImageNet's 0.08 for small images)
CROP_RATIO = (3 / 4, 4 / 3)


def default_workers() -> int:
    """Decoding processes per loader: the CPUs this process may use, less one for the training
    loop, between 1 and 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


class Samples:
    """Rows of inputs read on demand (module docstring). Subclasses implement ``_read``."""

    def __init__(self, rows: np.ndarray, sample_shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.rows = rows  # indices into the source, in this view's order
        self.sample_shape = sample_shape
        self.dtype = dtype
        self.workers = default_workers()
        self.seed = 0

    # ---------------------------------------------------------------- what subclasses provide

    def _read(self, source_row: int, train: bool, gen: torch.Generator | None) -> torch.Tensor:
        """One row decoded (and, when ``train``, transformed with ``gen``), of ``sample_shape``."""
        raise NotImplementedError

    def _view(self, rows: np.ndarray) -> Samples:
        raise NotImplementedError

    @property
    def row_bytes(self) -> int:
        """The decoded size of one row."""
        return math.prod(self.sample_shape) * torch.empty((), dtype=self.dtype).element_size()

    # ---------------------------------------------------------------- the tensor-like surface

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.sample_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def read(self, i: int, *, train: bool = False, epoch: int = 0) -> torch.Tensor:
        """Row ``i`` of this view, decoded; with ``train``, transformed as epoch ``epoch`` draws it."""
        gen = None
        if train:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "sample", epoch, int(self.rows[i])))
        return self._read(int(self.rows[i]), train, gen)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            picked = range(len(self))[key]
            if not len(picked):
                return torch.empty((0, *self.sample_shape), dtype=self.dtype)
            return torch.stack([self.read(i) for i in picked])
        rows = torch.as_tensor(key).reshape(-1).cpu().numpy()
        return self._view(self.rows[rows])

    def split(self, size: int) -> Iterator[torch.Tensor]:
        """Every row in order, ``size`` at a time, decoded by worker processes."""
        loader = DataLoader(
            _Rows(self, train=False),
            batch_size=size,
            shuffle=False,
            num_workers=min(self.workers, max(0, math.ceil(len(self) / size) - 1)),
            generator=torch.Generator().manual_seed(0),  # never draws from the global RNG
        )
        with _worker_errors():
            for batch, _index in loader:
                yield batch

    def to(self, *_args: Any, **_kwargs: Any) -> Samples:
        return self

    def cpu(self) -> Samples:
        return self

    def materialize(self) -> torch.Tensor:
        """Every row decoded into one tensor (the in-memory path), decoded by worker processes."""
        out = torch.empty(self.shape, dtype=self.dtype)
        done = 0
        for batch in self.split(256):
            out[done : done + len(batch)] = batch
            done += len(batch)
        return out


class _Rows(Dataset[tuple[torch.Tensor, int]]):
    """(row decoded, its index in the view): what a loader over a ``Samples`` yields."""

    def __init__(self, samples: Samples, *, train: bool) -> None:
        self.samples, self.train, self.epoch = samples, train, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.samples.read(i, train=self.train, epoch=self.epoch), i


# ---------------------------------------------------------------- training


class _Order(Sampler[list[int]]):
    """The batches of one epoch: consecutive slices of its order from a first step, each cut to
    this process's share (``rank::world``) when the job runs data-parallel."""

    def __init__(self, batch_size: int, steps: int, rank: int = 0, world: int = 1) -> None:
        self.batch_size, self.steps, self.rank, self.world = batch_size, steps, rank, world
        self.order: Sequence[int] = []
        self.first = 0

    def __len__(self) -> int:
        return self.steps - self.first

    def __iter__(self) -> Iterator[list[int]]:
        bs = self.batch_size
        for step in range(self.first, self.steps):
            yield list(self.order[step * bs : (step + 1) * bs][self.rank :: self.world])


class TrainingLoader:
    """Batches of one epoch of a ``Samples`` in a given order, through a ``DataLoader``: worker
    processes decode and transform (started anew each epoch, so that they see its number: the
    crops depend on it), pinned memory on CUDA, ``prefetch``
    batches ahead per worker. Yields (inputs on ``device``, their row indices on ``device``)."""

    def __init__(
        self,
        samples: Samples,
        batch_size: int,
        steps: int,
        device: torch.device,
        *,
        rank: int = 0,
        world: int = 1,
        prefetch: int = 4,
    ) -> None:
        self.rows = _Rows(samples, train=True)
        self.order = _Order(batch_size, steps, rank, world)
        self.device = device
        workers = samples.workers
        self.loader = DataLoader(
            self.rows,
            batch_sampler=self.order,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            prefetch_factor=prefetch if workers else None,
            generator=torch.Generator().manual_seed(0),  # never draws from the global RNG (resume)
        )

    def epoch(
        self, epoch: int, order: torch.Tensor, first: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` in ``order`` (a permutation of the rows), from step ``first``."""
        self.rows.epoch = epoch
        self.order.order = order.cpu().tolist()
        self.order.first = first
        with _worker_errors():
            for batch, index in self.loader:
                yield (
                    batch.to(self.device, non_blocking=True),
                    index.to(self.device, non_blocking=True),
                )


@contextlib.contextmanager
def _worker_errors() -> Iterator[None]:
    """A dataset error raised in a loader's worker process, as the error alone: the loader adds the
    worker's traceback to its message, which is not the user's business."""
    from core.data.base import DatasetError

    try:
        yield
    except DatasetError as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        if "Original Traceback" in str(e) and ": " in last:
            raise DatasetError(last.split(": ", 1)[1]) from None
        raise


# ---------------------------------------------------------------- sources


class ImageFiles(Samples):
    """Image files decoded with PIL per sample, to ``channels`` x ``size`` x ``size`` uint8.

    Without ``transforms`` every read resizes the whole image to the square (what the in-memory
    path stores). With ``transforms="standard"``: training reads take a random resized crop
    (area ``CROP_SCALE``, aspect ``CROP_RATIO``) flipped left-right half of the time; evaluation
    reads resize the shorter side to ``size / EVAL_CROP`` and take the centre square.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        channels: int,
        size: int,
        transforms: str = "none",
        rows: np.ndarray | None = None,
    ) -> None:
        super().__init__(np.arange(len(paths)) if rows is None else rows, (channels, size, size), torch.uint8)
        self.paths, self.channels, self.size, self.transforms = paths, channels, size, transforms

    def _view(self, rows: np.ndarray) -> Samples:
        view = ImageFiles(self.paths, self.channels, self.size, self.transforms, rows)
        view.workers, view.seed = self.workers, self.seed
        return view

    def _read(self, source_row: int, train: bool, gen: torch.Generator | None) -> torch.Tensor:
        path = self.paths[source_row]
        mode = "L" if self.channels == 1 else "RGB"
        size = self.size
        try:
            with Image.open(path) as img:
                if self.transforms == "none":
                    img.draft(mode, (size, size))  # JPEG decodes at a reduced scale: much faster
                    out = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                elif train:
                    assert gen is not None
                    img.draft(mode, (size, size))
                    out = _random_resized_crop(img.convert(mode), size, gen)
                else:
                    short = round(size / EVAL_CROP)
                    img.draft(mode, (short, short))
                    out = _center_crop(img.convert(mode), short, size)
                arr = np.asarray(out, np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            from core.data.base import DatasetError

            raise DatasetError(f"cannot read image {path}: {e}") from e
        tensor = torch.from_numpy(arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
        return tensor


def _random_resized_crop(img: Image.Image, size: int, gen: torch.Generator) -> Image.Image:
    w, h = img.size
    area = w * h
    u = torch.rand(4, generator=gen).tolist()
    for attempt in range(10):
        target = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[0])
        log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
        ratio = math.exp(log_lo + (log_hi - log_lo) * u[1])
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(u[2] * (w - cw + 1))
            top = int(u[3] * (h - ch + 1))
            box = (left, top, left + cw, top + ch)
            break
        u = torch.rand(4, generator=gen).tolist() if attempt < 9 else u
    else:  # no crop of the drawn shape fits: the whole image
        box = (0, 0, w, h)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if float(torch.rand(1, generator=gen)) < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def _center_crop(img: Image.Image, short: int, size: int) -> Image.Image:
    w, h = img.size
    scale = short / min(w, h)
    resized = img.resize(
        (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR
    )
    w, h = resized.size
    left, top = (w - size) // 2, (h - size) // 2
    return resized.crop((left, top, left + size, top + size))


class ArrayRows(Samples):
    """Rows of an array that stays where it is (a memory-mapped archive member, torchvision's
    arrays); read, copied and converted per sample. Image arrays (uint8, C x H x W) take the
    standard training transforms on the tensor when asked (random resized crop, flip)."""

    def __init__(
        self, array: np.ndarray, dtype: torch.dtype, transforms: str = "none", rows: np.ndarray | None = None
    ) -> None:
        super().__init__(np.arange(len(array)) if rows is None else rows, tuple(array.shape[1:]), dtype)
        self.array, self.transforms = array, transforms

    def _view(self, rows: np.ndarray) -> Samples:
        view = ArrayRows(self.array, self.dtype, self.transforms, rows)
        view.workers, view.seed = self.workers, self.seed
        return view

    def materialize(self) -> torch.Tensor:
        """Every row, copied out of the array at once (no per-row decoding to do)."""
        rows = self.rows
        if len(rows) == len(self.array) and np.array_equal(rows, np.arange(len(rows))):
            return torch.from_numpy(np.array(self.array)).to(self.dtype)
        return torch.from_numpy(np.asarray(self.array[rows])).to(self.dtype)

    def _read(self, source_row: int, train: bool, gen: torch.Generator | None) -> torch.Tensor:
        row = torch.from_numpy(np.array(self.array[source_row])).to(self.dtype)
        if train and self.transforms == "standard" and gen is not None and row.ndim == 3:
            return _tensor_crop_flip(row, gen)
        return row


def _tensor_crop_flip(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop and flip of a small C x H x W image already at its final size."""
    from torchvision.transforms.v2 import functional as TF

    _channels, h, w = img.shape
    area = h * w
    u = torch.rand(5, generator=gen).tolist()
    target = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[0])
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = math.exp(log_lo + (log_hi - log_lo) * u[1])
    cw = min(w, max(1, round(math.sqrt(target * ratio))))
    ch = min(h, max(1, round(math.sqrt(target / ratio))))
    top, left = int(u[3] * (h - ch + 1)), int(u[2] * (w - cw + 1))
    out = TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
    return TF.horizontal_flip(out) if u[4] < 0.5 else out
