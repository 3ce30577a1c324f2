"""Small networks: an MLP, MNIST-1D's 1-D CNN and a plain 2-D CNN.

Submodules are named (``hidden.0``, ``features.1``, ``classifier``) because feature losses
address them by module path; each numbered block ends with its activation, so a block's output
is the feature a hint or attention loss reads.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from core.errors import SpecError
from core.models.common import require_classes, require_rank
from core.spec import CNN1DModel, CNNModel, MLPModel

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Flatten, ``hidden`` blocks of linear + activation (+ dropout), then a linear classifier."""

    def __init__(
        self, in_features: int, hidden: tuple[int, ...], num_classes: int, activation: str, dropout: float
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        blocks: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers: OrderedDict[str, nn.Module] = OrderedDict(
                linear=nn.Linear(width, size), act=_ACTIVATIONS[activation]()
            )
            if dropout > 0:
                layers["dropout"] = nn.Dropout(dropout)
            blocks.append(nn.Sequential(layers))
            width = size
        self.hidden = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.flatten(x)))


def build_mlp(spec: MLPModel, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    require_classes(num_classes)
    if not input_shape or any(d < 1 for d in input_shape):
        raise SpecError(f"model 'mlp' cannot read inputs of shape {tuple(input_shape)}")
    return MLP(math.prod(input_shape), spec.hidden, num_classes, spec.activation, spec.dropout)


def _conv_length(length: int, kernel: int, stride: int = 2, padding: int = 1) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class CNN1D(nn.Module):
    """MNIST-1D's ConvBase, with any number of layers.

    The first convolution has kernel 5, the others kernel 3; all have stride 2 and padding 1, each
    followed by a ReLU; the flattened last feature map feeds one linear layer. Inputs are
    ``(N, L)`` signals (``(N, 1, L)`` is accepted too).
    """

    def __init__(self, length: int, channels: int, layers: int, num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_channels = 1
        for i in range(layers):
            kernel = 5 if i == 0 else 3
            length = _conv_length(length, kernel)
            if length < 1:
                raise SpecError(
                    f"model 'cnn1d': the signal is too short for {layers} strided layers "
                    f"(it vanishes at layer {i + 1}); use fewer layers"
                )
            conv = nn.Conv1d(in_channels, channels, kernel, stride=2, padding=1)
            blocks.append(nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU())))
            in_channels = channels
        self.features = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.classifier(self.flatten(self.features(x)))


def build_cnn1d(spec: CNN1DModel, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    require_classes(num_classes)
    require_rank("cnn1d", input_shape, 1)
    return CNN1D(input_shape[0], spec.channels, spec.layers, num_classes)


class CNN(nn.Module):
    """Conv3x3-BN-ReLU-MaxPool2 blocks, then a hidden linear layer and the classifier.

    Pooling stops once the feature map is 1 pixel wide, so the same spec runs on 8x8 digits and
    32x32 CIFAR images alike.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        hidden: int,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        in_channels, height, width = input_shape
        blocks: list[nn.Module] = []
        for out_channels in channels:
            layers: OrderedDict[str, nn.Module] = OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(out_channels),
                relu=nn.ReLU(),
            )
            if min(height, width) >= 2:
                layers["pool"] = nn.MaxPool2d(2)
                height, width = height // 2, width // 2
            blocks.append(nn.Sequential(layers))
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        head: OrderedDict[str, nn.Module] = OrderedDict(
            fc=nn.Linear(in_channels * height * width, hidden), relu=nn.ReLU()
        )
        if dropout > 0:
            head["dropout"] = nn.Dropout(dropout)
        self.hidden = nn.Sequential(head)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.flatten(self.features(x))))


def build_cnn(spec: CNNModel, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    require_classes(num_classes)
    require_rank("cnn", input_shape, 3)
    c, h, w = input_shape
    return CNN((c, h, w), spec.channels, spec.hidden, num_classes, spec.dropout)
