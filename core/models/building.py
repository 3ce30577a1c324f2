"""The model registry and the functions that turn a spec into a module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from core.data.base import DataSplits
from core.errors import SpecError
from core.models.base import Classifier
from core.models.io import load_torchscript, load_weights, resolve_data_path
from core.models.programs import load_onnx, load_pt2
from core.models.resnets import build_cifar_resnet, build_wide_resnet
from core.models.simple import build_cnn, build_cnn1d, build_mlp
from core.models.tv import build_torchvision
from core.registry import Registry
from core.spec import ArchitectureSpec, FileModel, ModelSpec, OnnxModel, Pt2Model, TorchScriptModel

# (spec, input_shape, num_classes) -> a net taking normalized inputs of shape (N, *input_shape).
NetBuilder = Callable[[Any, tuple[int, ...], int], nn.Module]

MODELS: Registry[NetBuilder] = Registry("model")
MODELS.register("mlp")(build_mlp)
MODELS.register("cnn1d")(build_cnn1d)
MODELS.register("cnn")(build_cnn)
MODELS.register("cifar_resnet")(build_cifar_resnet)
MODELS.register("wide_resnet")(build_wide_resnet)
MODELS.register("torchvision")(build_torchvision)


def build_net(
    spec: ArchitectureSpec | FileModel, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """The bare network for an architecture spec; ``SpecError`` if it cannot read such inputs."""
    if isinstance(spec, TorchScriptModel | OnnxModel | Pt2Model):
        raise SpecError(f"a {spec.kind} model is loaded from its file, not built from an architecture")
    return MODELS.get(spec.kind)(spec, tuple(input_shape), num_classes)


def build_classifier(
    spec: ModelSpec, data: DataSplits, data_root: Path, checkpoint: str | None = None
) -> nn.Module:
    """A model taking the dataset's raw inputs: a ``Classifier``, or the loaded program as is.

    ``checkpoint`` is a safetensors file under ``data_root`` loaded (strictly) into the net.
    """
    if isinstance(spec, TorchScriptModel | OnnxModel | Pt2Model):
        if checkpoint is not None:
            raise SpecError(f"a {spec.kind} model carries its weights: it takes no checkpoint")
        loader = {"torchscript": load_torchscript, "onnx": load_onnx, "pt2": load_pt2}[spec.kind]
        return loader(resolve_data_path(data_root, spec.path, f"{spec.kind} model"))
    net = build_net(spec, data.input_shape, data.num_classes)
    model = Classifier(net, data.mean, data.std, rank=len(data.input_shape))
    if checkpoint is not None:
        load_weights(model, resolve_data_path(data_root, checkpoint, "checkpoint"))
    return model


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BN statistics and normalization excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
