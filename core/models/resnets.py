"""Residual networks for small images: the CIFAR ResNet and the Wide ResNet.

Module names follow the reference implementations (``conv1``, ``layer1``..``layer3``, ``fc`` for
ResNet; ``block1``..``block3``, ``bn1``, ``fc`` for WRN) so the layer paths used in the KD
literature (hints on ``layer2``, attention on ``block1``..``block3``) work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from core.errors import SpecError
from core.models.common import init_resnet_weights, require_classes, require_rank
from core.spec import CifarResNetModel, WideResNetModel


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual; a 1x1 conv-BN projection when the shape changes.

    He et al. describe two shortcuts for the CIFAR nets: zero padding (option A) and projection
    (option B). We use B: it is what torchvision and most KD code bases do, and it costs under
    1% of the parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2): a 3x3 stem, three stages of n blocks (16, 32, 64 channels x ``width``), pooling, fc.

    ``width`` multiplies every stage, stem included, so resnet32x4 has 64/128/256 channels and
    7.4M parameters on CIFAR-100, the figure the KD literature (CRD) reports for it.
    """

    def __init__(self, in_channels: int, depth: int, width: int, num_classes: int) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise SpecError(f"cifar_resnet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = self._stage(widths[0], widths[0], n, stride=1)
        self.layer2 = self._stage(widths[0], widths[1], n, stride=2)
        self.layer3 = self._stage(widths[1], widths[2], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[2], num_classes)
        init_resnet_weights(self)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def build_cifar_resnet(spec: CifarResNetModel, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    require_classes(num_classes)
    require_rank("cifar_resnet", input_shape, 3)
    return CifarResNet(input_shape[0], spec.depth, spec.width, num_classes)


class WideBlock(nn.Module):
    """Pre-activation block (BN-ReLU-conv twice, dropout between the convolutions).

    As in the authors' code, when the shape changes the shortcut is a 1x1 conv applied to the
    already normalised input, so both branches see the same pre-activation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.equal_in_out = stride == 1 and in_channels == out_channels
        self.shortcut: nn.Module = nn.Identity()
        if not self.equal_in_out:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        residual = x if self.equal_in_out else self.shortcut(pre)
        return residual + out


class WideResNet(nn.Module):
    """WRN-depth-widen: a 16-channel stem, three groups of (depth-4)/6 blocks of 16k/32k/64k channels."""

    def __init__(self, in_channels: int, depth: int, widen: int, dropout: float, num_classes: int) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise SpecError(f"wide_resnet depth must be 6n+4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.block1 = self._group(widths[0], widths[1], n, 1, dropout)
        self.block2 = self._group(widths[1], widths[2], n, 2, dropout)
        self.block3 = self._group(widths[2], widths[3], n, 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        init_resnet_weights(self)

    @staticmethod
    def _group(
        in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float
    ) -> nn.Sequential:
        layers = [WideBlock(in_channels, out_channels, stride, dropout)]
        layers += [WideBlock(out_channels, out_channels, 1, dropout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(self.flatten(self.avgpool(x)))


def build_wide_resnet(spec: WideResNetModel, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    require_classes(num_classes)
    require_rank("wide_resnet", input_shape, 3)
    return WideResNet(input_shape[0], spec.depth, spec.widen, spec.dropout, num_classes)
