"""Evaluation: logits, classification metrics, compute cost, size on disk and CPU speed.

Used after every epoch (``predict_logits`` + ``classification_metrics``) and once at the end of a
job for the report (``model_cost``, ``size_on_disk``, ``measure_speed``). Every number returned is a
plain Python value so it can go straight into JSON and the metrics table.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.utils.flop_counter import FlopCounterMode

from core.data.samples import Samples


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration, then the caller's mode back (training may resume right after)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def predict_logits(
    model: nn.Module, x: torch.Tensor | Samples, *, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Float32 CPU logits of ``model`` on raw inputs ``x`` (a tensor, or streamed ``Samples``),
    computed batch by batch on ``device``."""
    if len(x) == 0:
        raise ValueError("predict_logits needs at least one input")
    outputs = []
    with _eval_mode(model), torch.inference_mode():
        for batch in x.split(batch_size):
            # Raw (possibly uint8) batches travel to the device: 4x less traffic than float32.
            outputs.append(model(batch.to(device, non_blocking=True)).float().cpu())
    return torch.cat(outputs)


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, *, bins: int = 15) -> float:
    """ECE over ``bins`` equal-width confidence bins ``(i/bins, (i+1)/bins]``, weighted by bin size."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == y).double()
    confidence = confidence.double()
    # Bin i holds confidences in (i/bins, (i+1)/bins]; confidence is always > 0 for a softmax.
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        count = int(in_bin.sum())
        if count:
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            ece += float(gap) * count / len(y)
    return ece


def classification_metrics(
    logits: torch.Tensor, y: torch.Tensor, *, teacher_logits: torch.Tensor | None = None, bins: int = 15
) -> dict[str, float]:
    """top1, top5 (k = min(5, classes)), ece, nll and, given a teacher, argmax ``agreement``."""
    if logits.ndim != 2 or len(logits) != len(y) or len(y) == 0:
        raise ValueError(f"expected (N, C) logits for N={len(y)} labels, got shape {tuple(logits.shape)}")
    logits = logits.detach().float().cpu()
    y = y.detach().long().cpu()
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    metrics = {
        "top1": float((topk[:, 0] == y).double().mean()),
        "top5": float((topk == y[:, None]).any(dim=1).double().mean()),
        "ece": expected_calibration_error(logits.softmax(dim=1), y, bins=bins),
        "nll": float(F.cross_entropy(logits.double(), y)),
    }
    if teacher_logits is not None:
        teacher_pred = teacher_logits.detach().cpu().argmax(dim=1)
        metrics["agreement"] = float((topk[:, 0] == teacher_pred).double().mean())
    return metrics


def count_params(model: nn.Module) -> int:
    """Every parameter, trainable or not, plus the packed weights of dynamically quantized Linears."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        # Quantized Linears keep weight and bias in packed params, invisible to .parameters().
        if isinstance(module, nnqd.Linear):
            weight, bias = module._weight_bias()
            total += weight.numel() + (bias.numel() if bias is not None else 0)
    return total


def _count_flops(model: nn.Module, one: torch.Tensor) -> int:
    """Counted flops of one forward; int8 Linears, unseen by the counter, are added by hook."""
    quantized_macs = 0
    in_features = {id(m): int(m.in_features) for m in model.modules() if isinstance(m, nnqd.Linear)}

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal quantized_macs
        quantized_macs += output.numel() * in_features[id(module)]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nnqd.Linear)]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(one)
    finally:
        for handle in handles:
            handle.remove()
    return int(counter.get_total_flops()) + 2 * quantized_macs


def model_cost(model: nn.Module, sample: torch.Tensor) -> dict[str, int | None]:
    """Parameter count, and MACs and flops of a forward on ONE sample (``sample[:1]``).

    Only matrix products and convolutions are counted (normalization, activations and biases are
    not), so ``macs == flops // 2``. A TorchScript module that the counter cannot follow reports
    ``None`` for both.
    """
    one = sample[:1].to(_model_device(model))
    with _eval_mode(model):
        try:
            flops: int | None = _count_flops(model, one)
        except RuntimeError:
            if not isinstance(model, torch.jit.ScriptModule):
                raise
            flops = None
    return {"params": count_params(model), "macs": None if flops is None else flops // 2, "flops": flops}


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the model's state dict written as safetensors (what an export's weights weigh).

    A quantized model's state dict holds packed parameters that safetensors cannot store; its size
    is that of ``torch.save`` instead (measured in memory, never loaded back).
    """
    state = model.state_dict()
    if any(not isinstance(v, torch.Tensor) or v.is_quantized for v in state.values()):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getbuffer().nbytes
    fd, path = tempfile.mkstemp(suffix=".safetensors")
    os.close(fd)
    try:
        # save_model drops tied duplicates (shared tensors) and makes tensors contiguous.
        save_model(model, path, force_contiguous=True)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


def _on_cpu(model: nn.Module) -> nn.Module:
    """The model itself when already on the CPU, otherwise a CPU copy (``.cpu()`` is in place)."""
    return model if _model_device(model).type == "cpu" else copy.deepcopy(model).cpu()


def _timed_runs(fn: Any, *, warmup: int, iters: int, budget_s: float) -> list[float]:
    """Seconds per call: up to ``warmup`` untimed calls, then up to ``iters`` timed ones.

    Everything stops once ``budget_s`` has passed since the first call, except that at least 3
    calls are timed (so a huge model costs about 4 forwards, not ``warmup + iters``).
    """
    start = time.perf_counter()
    for _ in range(warmup):
        if time.perf_counter() - start > budget_s / 2:
            break  # keep at least half of the budget for the timed runs
        fn()
    times: list[float] = []
    while len(times) < iters and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


@contextlib.contextmanager
def _cpu_threads(threads: int | None) -> Iterator[int]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def measure_speed(
    model: nn.Module,
    sample: torch.Tensor,
    *,
    warmup: int = 5,
    iters: int = 30,
    throughput_batch: int = 256,
    budget_s: float = 2.0,
    threads: int | None = None,
) -> dict[str, float | int]:
    """CPU latency at batch 1 (median) and throughput at ``throughput_batch``, in bounded time.

    Each of the two measurements gets half of ``budget_s``; iterations stop once it is spent, but
    never before 3 timed runs. ``threads`` sets torch's CPU thread count for the measurement only
    (None: the current one); the count used is reported, since on a busy machine multi-threaded
    kernels (int8 ones especially) can be many times slower than a single thread.
    """
    cpu_model = _on_cpu(model)
    one = sample[:1].cpu()
    # Cycle through the sample's rows to fill the throughput batch.
    big = sample.cpu()[torch.arange(throughput_batch) % len(sample)]
    half = budget_s / 2
    with _cpu_threads(threads) as used, _eval_mode(cpu_model), torch.inference_mode():
        latency = _timed_runs(lambda: cpu_model(one), warmup=warmup, iters=iters, budget_s=half)
        batch_times = _timed_runs(lambda: cpu_model(big), warmup=min(warmup, 2), iters=iters, budget_s=half)
    return {
        "latency_ms_b1": statistics.median(latency) * 1000.0,
        "throughput_per_s": throughput_batch * len(batch_times) / sum(batch_times),
        "throughput_batch": throughput_batch,
        "threads": used,
    }
