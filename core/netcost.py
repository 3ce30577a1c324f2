"""What one network costs on one input shape: parameters, forward multiply-accumulates, and the
float32 values autograd keeps per sample for the backward pass (torch-free).

The formulas follow the shapes of ``core.models``; tests/core/test_estimate.py checks them against
the real modules: parameter counts exact, activations within 2x. Python ints throughout, so an
absurd width gives an absurd number, never an overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from core.spec import CifarResNetModel, CNN1DModel, CNNModel, MLPModel, TorchvisionModel, WideResNetModel


@dataclass(frozen=True)
class NetCost:
    """One network on one input shape: parameters, forward MACs and kept floats per sample."""

    params: int
    macs: int
    kept: int  # float32 values autograd keeps per sample for the backward pass
    size_field: str  # the spec field that makes the network big (named when it is too big)


def _mlp(spec: MLPModel, shape: tuple[int, ...], classes: int) -> NetCost:
    width, params, macs = math.prod(shape), 0, 0
    kept = width  # the first linear layer keeps its input
    per_unit = 1 + (spec.activation == "gelu") + (1.25 if spec.dropout > 0 else 0)  # + a bool mask
    for size in spec.hidden:
        params += width * size + size
        macs += width * size
        kept += math.ceil(per_unit * size)
        width = size
    return NetCost(params + width * classes + classes, macs + width * classes, kept + 2 * classes, "hidden")


def _cnn1d(spec: CNN1DModel, shape: tuple[int, ...], classes: int) -> NetCost | None:
    length, channels, in_ch = shape[0], spec.channels, 1
    params = macs = 0
    kept = length
    for i in range(spec.layers):
        kernel = 5 if i == 0 else 3
        length = (length + 2 - kernel) // 2 + 1
        if length < 1:
            return None  # the engine refuses this spec with its own message
        params += in_ch * channels * kernel + channels
        macs += in_ch * channels * kernel * length
        kept += channels * length  # the ReLU's output, which the next layer reads
        in_ch = channels
    flat = channels * length
    return NetCost(params + flat * classes + classes, macs + flat * classes, kept + 2 * classes, "channels")


def _cnn(spec: CNNModel, shape: tuple[int, ...], classes: int) -> NetCost:
    in_ch, height, width = shape
    params = macs = 0
    kept = in_ch * height * width
    for out in spec.channels:
        area = height * width
        params += in_ch * out * 9 + 2 * out
        macs += in_ch * out * 9 * area
        kept += 2 * out * area  # the batch norm's input and the ReLU's output
        if min(height, width) >= 2:
            height, width = height // 2, width // 2
            kept += 3 * out * height * width  # the pooled output and its int64 indices
        in_ch = out
    conv_params, flat = params, in_ch * height * width
    head = flat * spec.hidden + spec.hidden + spec.hidden * classes + classes
    kept += math.ceil(spec.hidden * (1 + (1.25 if spec.dropout > 0 else 0))) + 2 * classes
    size_field = "channels" if conv_params >= head else "hidden"
    return NetCost(params + head, macs + flat * spec.hidden + spec.hidden * classes, kept, size_field)


def _down(n: int, stride: int) -> int:
    return (n - 1) // stride + 1  # a 3x3 convolution with padding 1


def _cifar_resnet(spec: CifarResNetModel, shape: tuple[int, ...], classes: int) -> NetCost:
    in_ch, height, width = shape
    blocks = (spec.depth - 2) // 6
    w0 = 16 * spec.width
    params, macs = 9 * in_ch * w0 + 2 * w0, 9 * in_ch * w0 * height * width
    kept, in_ch = in_ch * height * width + 2 * w0 * height * width, w0
    for stage, out in enumerate((w0, 2 * w0, 4 * w0)):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            height, width = _down(height, stride), _down(width, stride)
            area = height * width
            params += 9 * in_ch * out + 9 * out * out + 4 * out
            macs += (9 * in_ch * out + 9 * out * out) * area
            kept += 4 * out * area  # two batch-norm inputs, two ReLU outputs
            if stride != 1 or in_ch != out:  # the projection shortcut (1x1 conv + BN)
                params += in_ch * out + 2 * out
                macs += in_ch * out * area
                kept += out * area
            in_ch = out
    params += in_ch * classes + classes
    return NetCost(params, macs + in_ch * classes, kept + in_ch + 2 * classes, "width")


def _wide_resnet(spec: WideResNetModel, shape: tuple[int, ...], classes: int) -> NetCost:
    in_ch, height, width = shape
    blocks = (spec.depth - 4) // 6
    params, macs = 9 * in_ch * 16, 9 * in_ch * 16 * height * width
    kept, in_ch = in_ch * height * width, 16
    drop = 1.25 if spec.dropout > 0 else 0
    for stage, out in enumerate((16 * spec.widen, 32 * spec.widen, 64 * spec.widen)):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            kept += 2 * in_ch * height * width  # the block's input and its pre-activation
            height, width = _down(height, stride), _down(width, stride)
            area = height * width
            params += 2 * in_ch + 9 * in_ch * out + 2 * out + 9 * out * out
            macs += (9 * in_ch * out + 9 * out * out) * area
            kept += math.ceil((2 + drop) * out * area)
            if stride != 1 or in_ch != out:
                params += in_ch * out
                macs += in_ch * out * area
            in_ch = out
    params += 2 * in_ch + in_ch * classes + classes
    kept += 2 * in_ch * height * width + in_ch + 2 * classes  # the final BN-ReLU, pooled features
    return NetCost(params, macs + in_ch * classes, kept, "widen")


@dataclass(frozen=True)
class _Arch:
    """A torchvision architecture, measured once on the real modules (tests keep these honest)."""

    body: int  # parameters but the stem convolution and the last linear layer
    features: int  # inputs of the last linear layer
    stem: int  # output channels of the stem convolution (bias-free)
    kernel: int  # the stem's kernel on large images (resnets use 3 on small ones)
    small: tuple[float, float]  # (MACs, kept floats) per input pixel with the small-image stem (32 px)
    large: tuple[float, float]  # the same with the ImageNet stem (224 px)


_ARCHS: Final[dict[str, _Arch]] = {
    "resnet18": _Arch(11_167_104, 512, 64, 7, (542_405, 1157), (36_144, 111)),
    "resnet34": _Arch(21_275_264, 512, 64, 7, (1_132_229, 1964), (73_008, 161)),
    "resnet50": _Arch(23_498_624, 2048, 64, 7, (1_267_412, 6281), (81_456, 429)),
    "mobilenet_v2": _Arch(2_223_008, 1280, 32, 3, (23_888, 1585), (5_969, 390)),
    "mobilenet_v3_small": _Arch(1_517_424, 1024, 16, 3, (5_374, 335), (1_106, 81)),
    "mobilenet_v3_large": _Arch(4_201_600, 1280, 16, 3, (19_631, 910), (4_291, 220)),
    "shufflenet_v2_x0_5": _Arch(341_144, 1024, 24, 3, (10_647, 629), (786, 55)),
    "shufflenet_v2_x1_0": _Arch(1_252_956, 1024, 24, 3, (43_947, 1381), (2_868, 102)),
    "efficientnet_b0": _Arch(4_006_684, 1280, 32, 3, (31_230, 1809), (7_664, 440)),
}
SMALL_IMAGE_MAX: Final = 64  # as core.models.tv: images up to this size get the small-image stem


def _torchvision(spec: TorchvisionModel, shape: tuple[int, ...], classes: int) -> NetCost:
    arch = _ARCHS[spec.arch]
    in_ch, height, width = shape
    small = max(height, width) <= SMALL_IMAGE_MAX
    kernel = 3 if small and spec.arch.startswith("resnet") else arch.kernel
    params = arch.body + arch.stem * in_ch * kernel * kernel + (arch.features + 1) * classes
    macs_px, kept_px = arch.small if small else arch.large
    pixels = height * width
    return NetCost(params, math.ceil(macs_px * pixels), math.ceil(kept_px * pixels), "arch")


def cost_of(model: Any, dims: tuple[int, ...], classes: int) -> NetCost | None:
    """The cost of an architecture on inputs of ``dims`` (without the batch); None when it
    cannot read that rank or is not a registry architecture."""
    if isinstance(model, MLPModel):
        return _mlp(model, dims, classes)
    if isinstance(model, CNN1DModel):
        return _cnn1d(model, dims, classes) if len(dims) == 1 else None
    builders: dict[type, Any] = {
        CNNModel: _cnn,
        CifarResNetModel: _cifar_resnet,
        WideResNetModel: _wide_resnet,
        TorchvisionModel: _torchvision,
    }
    builder = builders.get(type(model))
    if builder is None or len(dims) != 3:
        return None  # another kind, or a rank the engine refuses with its own message
    return builder(model, dims, classes)
