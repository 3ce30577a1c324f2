"""The transfer set ("distillation data"): augmentations of a batch, applied on the device.

Each augmentation takes raw float inputs and soft targets and returns both, so label-mixing ones
(mixup, cutmix) keep the labels honest for the ``ce`` term while the teacher labels the very same
inputs. They draw from the global RNG, which the trainer re-seeds every epoch (``core.seeding``).
Inputs are ``(N, L)`` signals or ``(N, C, H, W)`` images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from core.data.base import DataSplits
from core.errors import SpecError
from core.registry import Registry
from core.spec import (
    AugmentSpec,
    CropAug,
    CutmixAug,
    FlipAug,
    MaskAug,
    MixupAug,
    NoiseAug,
    ReplaceAug,
    ShiftAug,
)

Augment = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
AUGMENTATIONS: Registry[Callable[..., Augment]] = Registry("augmentation")


def _channel_view(values: Sequence[float], x: Tensor) -> Tensor:
    """Per-channel statistics shaped to broadcast against ``x``."""
    t = torch.tensor(values, dtype=x.dtype, device=x.device)
    return t.reshape(1, -1, 1, 1) if x.dim() == 4 else t.reshape(1, 1)


def _spatial_mask(x: Tensor, prob: float) -> Tensor:
    """A boolean mask over positions (shared by an image's channels)."""
    shape = (x.shape[0], 1, *x.shape[2:]) if x.dim() == 4 else x.shape
    return torch.rand(shape, device=x.device) < prob


def _shift_index(n: int, size: int, shift: Tensor, device: torch.device) -> Tensor:
    return (torch.arange(size, device=device).unsqueeze(0) - shift.unsqueeze(1)) % size


def _take(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Per-sample window of images: ``rows`` (N, H') and ``cols`` (N, W') index the last two axes."""
    c = x.shape[1]
    x = torch.gather(x, 2, rows[:, None, :, None].expand(-1, c, -1, x.shape[3]))
    return torch.gather(x, 3, cols[:, None, None, :].expand(-1, c, rows.shape[1], -1))


@AUGMENTATIONS.register("mixup")
def mixup(spec: MixupAug, data: DataSplits) -> Augment:
    beta = torch.distributions.Beta(spec.alpha, spec.alpha)  # built once: construction is not free

    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        lam = beta.sample((len(x),)).to(x.device)
        perm = torch.randperm(len(x), device=x.device)
        lx = lam.view(-1, *([1] * (x.dim() - 1)))
        # lerp(b, a, lam) = lam * a + (1 - lam) * b, in one kernel
        return torch.lerp(x[perm], x, lx), torch.lerp(y[perm], y, lam[:, None])

    return apply


@AUGMENTATIONS.register("cutmix")
def cutmix(spec: CutmixAug, data: DataSplits) -> Augment:
    beta = torch.distributions.Beta(spec.alpha, spec.alpha)

    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        lam = float(beta.sample())
        perm = torch.randperm(len(x), device=x.device)
        sizes = x.shape[2:] if x.dim() == 4 else x.shape[1:]
        # a box covering a (1 - lam) share of the positions, one interval per spatial axis
        side = (1 - lam) ** (1 / len(sizes))
        slices = []
        area = 1.0
        for size in sizes:
            length = round(size * side)
            start = int(torch.randint(0, size - length + 1, (1,)))
            slices.append(slice(start, start + length))
            area *= length / size
        out = x.clone()
        index = (slice(None), slice(None), *slices) if x.dim() == 4 else (slice(None), *slices)
        out[index] = x[perm][index]
        return out, (1 - area) * y + area * y[perm]

    return apply


@AUGMENTATIONS.register("mask")
def mask(spec: MaskAug, data: DataSplits) -> Augment:
    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return torch.where(_spatial_mask(x, spec.prob), _channel_view(data.mean, x), x), y

    return apply


@AUGMENTATIONS.register("replace")
def replace(spec: ReplaceAug, data: DataSplits) -> Augment:
    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        donor = x[torch.randperm(len(x), device=x.device)]
        return torch.where(_spatial_mask(x, spec.prob), donor, x), y

    return apply


@AUGMENTATIONS.register("noise")
def noise(spec: NoiseAug, data: DataSplits) -> Augment:
    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return x + torch.randn_like(x) * (spec.std * _channel_view(data.std, x)), y

    return apply


@AUGMENTATIONS.register("shift")
def shift(spec: ShiftAug, data: DataSplits) -> Augment:
    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        n, m = len(x), spec.max_shift
        if x.dim() == 2:
            s = torch.randint(-m, m + 1, (n,), device=x.device)
            return torch.gather(x, 1, _shift_index(n, x.shape[1], s, x.device)), y
        h, w = x.shape[2:]
        sh = torch.randint(-m, m + 1, (n,), device=x.device)
        sw = torch.randint(-m, m + 1, (n,), device=x.device)
        return _take(x, _shift_index(n, h, sh, x.device), _shift_index(n, w, sw, x.device)), y

    return apply


@AUGMENTATIONS.register("crop")
def crop(spec: CropAug, data: DataSplits) -> Augment:
    if not data.is_image:
        raise SpecError("augmentation 'crop' needs image data; use 'shift' for 1-D signals")
    p = spec.padding

    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), device=x.device)
        ox = torch.randint(0, 2 * p + 1, (n,), device=x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)
        return _take(padded, rows, ox[:, None] + torch.arange(w, device=x.device)), y

    return apply


@AUGMENTATIONS.register("flip")
def flip(spec: FlipAug, data: DataSplits) -> Augment:
    if not data.is_image:
        raise SpecError("augmentation 'flip' needs image data")

    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        chosen = (torch.rand(len(x), device=x.device) < spec.prob).view(-1, 1, 1, 1)
        return torch.where(chosen, x.flip(-1), x), y

    return apply


def build_augmenter(specs: Sequence[AugmentSpec], data: DataSplits) -> Augment | None:
    """Chain the augmentations in the order given; ``None`` when there are none."""
    steps = [AUGMENTATIONS.get(s.kind)(s, data) for s in specs]
    if not steps:
        return None

    def apply(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for step in steps:
            x, y = step(x, y)
        return x, y

    return apply
