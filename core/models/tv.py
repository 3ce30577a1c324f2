"""torchvision ImageNet architectures, adapted to the data's channels, image size and classes.

Weights are never downloaded (``weights=None``): these are architectures to train or to load a
checkpoint into. ImageNet stems shrink a 224-pixel image 4x (resnet, shufflenet) or 2x before the
first block; on 32-pixel images that leaves a few pixels for the last stages, so for small images
we use the usual CIFAR adaptation: a stride-1 stem (3x3 for resnets) and no stem max-pooling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torchvision.models as tvm
from torch import nn

from core.models.common import require_classes, require_rank
from core.spec import TorchvisionModel

# Images at most this many pixels on a side get the small-image stem.
SMALL_IMAGE_MAX = 64


@dataclass(frozen=True)
class _Stem:
    conv: str  # module path of the first convolution
    maxpool: str | None = None  # module path of the stem's max-pooling, if any
    resnet: bool = False  # CIFAR resnets also swap the 7x7 kernel for a 3x3 one


_RESNET = _Stem("conv1", "maxpool", resnet=True)
_FEATURES = _Stem("features.0.0")
_SHUFFLE = _Stem("conv1.0", "maxpool")

# An explicit table, not getattr(torchvision.models, name): names come from users.
_ARCHS: dict[str, tuple[Callable[..., nn.Module], _Stem]] = {
    "resnet18": (tvm.resnet18, _RESNET),
    "resnet34": (tvm.resnet34, _RESNET),
    "resnet50": (tvm.resnet50, _RESNET),
    "mobilenet_v2": (tvm.mobilenet_v2, _FEATURES),
    "mobilenet_v3_small": (tvm.mobilenet_v3_small, _FEATURES),
    "mobilenet_v3_large": (tvm.mobilenet_v3_large, _FEATURES),
    "shufflenet_v2_x0_5": (tvm.shufflenet_v2_x0_5, _SHUFFLE),
    "shufflenet_v2_x1_0": (tvm.shufflenet_v2_x1_0, _SHUFFLE),
    "efficientnet_b0": (tvm.efficientnet_b0, _FEATURES),
}


def _replace(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, name, module)


def _new_stem(old: nn.Conv2d, in_channels: int, small: bool, resnet: bool) -> nn.Conv2d:
    kernel: Any = 3 if small and resnet else old.kernel_size
    padding: Any = 1 if small and resnet else old.padding
    stride: Any = 1 if small else old.stride
    conv = nn.Conv2d(
        in_channels, old.out_channels, kernel, stride=stride, padding=padding, bias=old.bias is not None
    )
    # Same initialisation torchvision gives its convolutions.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def build_torchvision(spec: TorchvisionModel, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    require_classes(num_classes)
    require_rank("torchvision", input_shape, 3)
    channels, height, width = input_shape
    constructor, stem = _ARCHS[spec.arch]
    net = constructor(weights=None, num_classes=num_classes)
    small = max(height, width) <= SMALL_IMAGE_MAX
    if small or channels != 3:
        old = net.get_submodule(stem.conv)
        assert isinstance(old, nn.Conv2d), f"{spec.arch}: {stem.conv} is not a convolution"
        _replace(net, stem.conv, _new_stem(old, channels, small, stem.resnet))
    if small and stem.maxpool is not None:
        _replace(net, stem.maxpool, nn.Identity())
    return net
