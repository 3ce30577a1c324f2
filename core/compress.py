"""Post-training compression of a student, to compare with distillation (DESIGN.md §1).

``compress_model`` returns a new model (the original is never touched); ``describe_compression``
says what it became: how many nonzero parameters, how sparse, how many bytes. The caller evaluates
the compressed model like any other (accuracy, speed).

- ``dynamic_int8``: the Linear layers' weights are stored as int8 and activations are quantized on
  the fly at inference. CPU only: the returned model lives on the CPU and must be run there.
  Convolutions stay float32.
- ``prune``: global unstructured L1 magnitude pruning of every Conv and Linear weight, made
  permanent (plain zeros in ordinary tensors). The model keeps the original's device. Zeros only
  save space when stored sparsely; see ``compressed_size`` for the formula used.
- ``prune_to_count`` prunes (a teacher) down to a given number of nonzero parameters, and
  ``MaskHold`` keeps the pruned weights at zero while the model is trained further (fine-tuning).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.nn.utils import prune

from core.evaluate import size_on_disk
from core.spec import DynamicInt8Compress, PruneCompress

Compression = DynamicInt8Compress | PruneCompress
_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def compress_model(model: nn.Module, cfg: Compression) -> nn.Module:
    """A compressed copy of ``model`` in eval mode; ``model`` itself is left unchanged."""
    if isinstance(cfg, DynamicInt8Compress):
        return _quantize_int8(model)
    return _prune(model, cfg.amount)


def _quantize_int8(model: nn.Module) -> nn.Module:
    copy_ = copy.deepcopy(model).cpu().eval()
    if not any(isinstance(m, nn.Linear) for m in copy_.modules()):
        return copy_  # nothing to quantize; describe_compression says so
    with warnings.catch_warnings():
        # torch 2.14 deprecates torch.ao.quantization (moving to torchao, not installed here) and the
        # quantized-tensor constructors it calls; the eager dynamic path still works.
        warnings.filterwarnings(
            "ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor.* are deprecated", category=UserWarning
        )
        return torch.ao.quantization.quantize_dynamic(copy_, {nn.Linear}, dtype=torch.qint8, inplace=True)


def _prune(model: nn.Module, amount: float) -> nn.Module:
    copy_ = copy.deepcopy(model).eval()
    targets = [(m, "weight") for m in copy_.modules() if isinstance(m, _PRUNABLE)]
    if targets:
        # Global: the smallest weights across all layers go, so layers are pruned unevenly.
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
        for module, name in targets:
            prune.remove(module, name)  # bake the mask in: plain weights, ordinary state dict
    return copy_


def prunable_count(model: nn.Module) -> tuple[int, int]:
    """(Conv/Linear weights, every other parameter) of ``model``: what pruning can remove, what it keeps."""
    prunable = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, _PRUNABLE)}
    total = sum(p.numel() for p in model.parameters())
    return sum(prunable.values()), total - sum(prunable.values())


def prune_to_count(model: nn.Module, nonzero: int) -> nn.Module:
    """A copy of ``model`` whose parameters hold ``nonzero`` nonzero values, by global L1 pruning.

    Only Conv/Linear weights are pruned; every other parameter (biases, normalization) is kept, so
    ``nonzero - others`` of the weights stay: the largest magnitudes across all layers. The count is
    exact unless some kept parameters are zero already (an untrained normalization's biases).
    Raises ``ValueError`` when ``nonzero`` leaves no weight or is not below the parameter count."""
    weights, others = prunable_count(model)
    keep = nonzero - others
    if keep <= 0 or keep >= weights:
        raise ValueError(
            f"cannot prune to {nonzero:,} nonzero parameters: the model has {weights:,} prunable "
            f"weights and {others:,} other parameters"
        )
    copy_ = copy.deepcopy(model).eval()
    targets = [(m, "weight") for m in copy_.modules() if isinstance(m, _PRUNABLE)]
    # an int amount: exactly that many weights go (a float would be rounded by torch)
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=weights - keep)
    for module, name in targets:
        prune.remove(module, name)
    return copy_


class MaskHold:
    """Holds a pruned model's zero weights at zero while it trains.

    The mask is taken from the weights' zeros when the hold starts. Gradients of the pruned entries
    are zeroed (so optimizer state, gradient clipping and weight decay see the masked network), and
    before every forward the weights are multiplied by the mask again, so no optimizer can move a
    pruned entry into use. The state dict keeps its keys: checkpoints load into the unpruned
    architecture. ``close()`` removes the hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.masks: dict[nn.Module, torch.Tensor] = {}
        self._handles: list[Any] = []
        for module in model.modules():
            if isinstance(module, _PRUNABLE):
                mask = (module.weight.detach() != 0).to(module.weight.dtype)
                self.masks[module] = mask
                self._handles.append(module.weight.register_hook(lambda g, m=mask: g * m))
                self._handles.append(module.register_forward_pre_hook(self._apply))

    def _apply(self, module: nn.Module, _inputs: Any) -> None:
        weight = cast(torch.Tensor, module.weight)
        with torch.no_grad():
            weight.mul_(self.masks[module].to(weight.device))

    def reapply(self) -> None:
        """Mask every weight now (after loading weights, before saving them)."""
        for module in self.masks:
            self._apply(module, ())

    def close(self) -> None:
        self.reapply()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _weights(model: nn.Module) -> Iterator[tuple[torch.Tensor, bool]]:
    """Every parameter as a dense tensor, flagged True for Conv/Linear weights (the prunable ones)."""
    prunable = {id(m.weight) for m in model.modules() if isinstance(m, _PRUNABLE)}
    for p in model.parameters():
        yield p.detach(), id(p) in prunable
    for module in model.modules():
        # Dynamically quantized Linears keep weight and bias in packed params, not parameters.
        if isinstance(module, nnqd.Linear):
            weight, bias = module._weight_bias()
            yield weight.dequantize(), True
            if bias is not None:
                yield bias.detach(), False


def sparsity(model: nn.Module) -> float:
    """Fraction of zero entries among the Conv/Linear weights (0.0 when there are none)."""
    total = zeros = 0
    for tensor, is_prunable in _weights(model):
        if is_prunable:
            total += tensor.numel()
            zeros += int((tensor == 0).sum())
    return zeros / total if total else 0.0


def count_nonzero_params(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(t)) for t, _ in _weights(model))


def sparse_size(model: nn.Module) -> int:
    """Bytes of ``model`` with its Conv/Linear weights stored as the nonzero values plus a 1-bit
    mask per position (the ``prune`` formula of ``compressed_size``)."""
    prunable = {id(m.weight) for m in model.modules() if isinstance(m, _PRUNABLE)}
    total, seen = 0, set()
    for tensor in model.state_dict(keep_vars=True).values():
        key = (tensor.data_ptr(), tensor.numel())
        if key in seen:
            continue  # tied weights are stored once
        seen.add(key)
        if id(tensor) in prunable:
            total += int(torch.count_nonzero(tensor)) * tensor.element_size() + math.ceil(tensor.numel() / 8)
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def compressed_size(model: nn.Module, cfg: Compression) -> int:
    """Bytes needed to store the compressed ``model``.

    ``dynamic_int8``: the size of the quantized state dict as ``torch.save`` writes it (int8 weights,
    float scales, other layers float32); measured in memory only. ``prune``: every pruned Conv/Linear
    weight counts ``nonzeros * element_size + ceil(numel / 8)`` bytes (the nonzero values and a bitmask
    of their positions), every other tensor of the state dict its dense size; tied tensors once. No
    file format is implied: this is the size a bitmask-sparse format would need, which is below the
    dense size only beyond ~3% sparsity for float32.
    """
    if isinstance(cfg, DynamicInt8Compress):
        return size_on_disk(model)
    return sparse_size(model)


def describe_compression(original: nn.Module, compressed: nn.Module, cfg: Compression) -> dict[str, Any]:
    """``{kind, params_nonzero, sparsity, size_bytes, note}`` for the report."""
    if isinstance(cfg, DynamicInt8Compress):
        layers = sum(isinstance(m, nnqd.Linear) for m in compressed.modules())
        note = (
            f"{layers} Linear layer(s) quantized to int8 (dynamic); other layers float32; run on the CPU"
            if layers
            else "no Linear layer to quantize: the model is an unchanged float32 copy"
        )
    else:
        layers = sum(isinstance(m, _PRUNABLE) for m in original.modules())
        note = (
            f"{cfg.amount:.0%} of the weights of {layers} Conv/Linear layer(s) pruned by global L1 "
            "magnitude; size = nonzero values + 1-bit position mask"
            if layers
            else "no Conv/Linear layer to prune: the model is an unchanged copy"
        )
    return {
        "kind": cfg.kind,
        "params_nonzero": count_nonzero_params(compressed),
        "sparsity": sparsity(compressed),
        "size_bytes": compressed_size(compressed, cfg),
        "note": note,
    }
