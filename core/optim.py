"""Optimizers and learning-rate schedules.

A schedule is a pure function of the optimizer step, applied before every step: nothing to save
but the step count, so a resumed run follows the same curve exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from core.spec import (
    AdamOptim,
    AdamWOptim,
    ConstantSchedule,
    CosineSchedule,
    InverseTimeSchedule,
    OptimizerSpec,
    ScheduleSpec,
    SGDOptim,
    StepSchedule,
)


def fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether the fused implementation (one kernel per step over every parameter, instead of a few
    per parameter) applies: floating-point parameters, all on one CPU or CUDA device. The same
    update rule; on small models, where the per-parameter loop dominates, several times faster."""
    devices = {p.device for p in params}
    return (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) for p in params)
    )


def _keep_fused(opt: torch.optim.Optimizer) -> None:
    """After ``load_state_dict``: the fused implementation stays, whatever the saved groups say (a
    checkpoint from before it was used), with its step counts where it keeps them."""
    for group in opt.param_groups:
        group["fused"] = True
        for p in group["params"]:
            step = opt.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                opt.state[p]["step"] = step.to(p.device, torch.float32)


def build_optimizer(spec: OptimizerSpec, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    opt = _build(spec, params, fusable(params) or None)  # None: torch's default implementation
    if opt.defaults.get("fused"):
        opt.register_load_state_dict_post_hook(_keep_fused)
    return opt


def _build(
    spec: OptimizerSpec, params: list[torch.nn.Parameter], fused: bool | None
) -> torch.optim.Optimizer:
    if isinstance(spec, SGDOptim):
        return torch.optim.SGD(
            params,
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.nesterov and spec.momentum > 0,
            weight_decay=spec.weight_decay,
            fused=fused,
        )
    if isinstance(spec, AdamOptim):
        return torch.optim.Adam(
            params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, fused=fused
        )
    if isinstance(spec, AdamWOptim):
        return torch.optim.AdamW(
            params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay, fused=fused
        )
    raise AssertionError(f"unhandled optimizer {spec!r}")


def lr_at(spec: ScheduleSpec, base_lr: float, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based) of a stage of ``total_steps`` steps."""
    if isinstance(spec, InverseTimeSchedule):
        return base_lr / (1.0 + base_lr * step / spec.decay_steps)
    warmup = round(spec.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if isinstance(spec, ConstantSchedule):
        return base_lr
    if isinstance(spec, StepSchedule):
        epoch = step // steps_per_epoch
        return base_lr * spec.gamma ** sum(epoch >= m for m in spec.milestones)
    if isinstance(spec, CosineSchedule):
        span = max(1, total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return spec.min_lr + (base_lr - spec.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise AssertionError(f"unhandled schedule {spec!r}")


def schedule(
    spec: ScheduleSpec, base_lr: float, steps_per_epoch: int, total_steps: int
) -> Callable[[int], float]:
    return lambda step: lr_at(spec, base_lr, step, steps_per_epoch, total_steps)
