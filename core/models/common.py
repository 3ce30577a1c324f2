"""Shape checks and initialisation shared by the architectures."""

from __future__ import annotations

from torch import nn

from core.errors import SpecError

_RANK_NAMES = {1: "1-D signals (input_shape (L,))", 3: "images (input_shape (C, H, W))"}
_MODELS_FOR_RANK = {1: "mlp, cnn1d", 3: "mlp, cnn, cifar_resnet, wide_resnet, torchvision"}


def describe_rank(input_shape: tuple[int, ...]) -> str:
    kind = _RANK_NAMES.get(len(input_shape), f"rank-{len(input_shape)} inputs")
    return f"{kind.split(' (')[0]} of shape {tuple(input_shape)}"


def require_rank(kind: str, input_shape: tuple[int, ...], rank: int) -> None:
    """Refuse, with a message a user can act on, an architecture that cannot read the data."""
    if len(input_shape) == rank and all(d >= 1 for d in input_shape):
        return
    suggestion = _MODELS_FOR_RANK.get(len(input_shape))
    hint = f"; models for this data: {suggestion}" if suggestion else ""
    raise SpecError(
        f"model {kind!r} needs {_RANK_NAMES[rank]}, but the dataset has {describe_rank(input_shape)}{hint}"
    )


def require_classes(num_classes: int) -> None:
    if num_classes < 1:
        raise SpecError(f"a classifier needs at least one class, got {num_classes}")


def init_resnet_weights(model: nn.Module) -> None:
    """He initialisation for convolutions (fan_out, as in the ResNet papers), unit BN, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
