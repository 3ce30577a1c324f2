"""Learning-rate schedules as functions of the step."""

from __future__ import annotations

import math

import pytest
import torch

from core.optim import build_optimizer, lr_at
from core.spec import (
    AdamWOptim,
    ConstantSchedule,
    CosineSchedule,
    InverseTimeSchedule,
    SGDOptim,
    StepSchedule,
)


def test_constant_with_warmup() -> None:
    s = ConstantSchedule(warmup_epochs=1)
    assert [lr_at(s, 0.1, i, 4, 40) for i in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])


def test_step() -> None:
    s = StepSchedule(milestones=(2, 4), gamma=0.1)
    assert [lr_at(s, 1.0, e * 10, 10, 60) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_runs_from_base_to_min() -> None:
    s = CosineSchedule(min_lr=0.01)
    assert lr_at(s, 1.0, 0, 10, 100) == pytest.approx(1.0)
    assert lr_at(s, 1.0, 50, 10, 100) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_at(s, 1.0, 100, 10, 100) == pytest.approx(0.01)


def test_inverse_time_decay() -> None:
    s = InverseTimeSchedule(decay_steps=100)
    for t in (0, 10, 1000):
        assert lr_at(s, 0.5, t, 10, 2000) == pytest.approx(0.5 / (1 + 0.5 * t / 100))


def test_optimizers() -> None:
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(SGDOptim(lr=0.2, nesterov=True), params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    adamw = build_optimizer(AdamWOptim(weight_decay=0.05), params)
    assert isinstance(adamw, torch.optim.AdamW) and math.isclose(adamw.param_groups[0]["weight_decay"], 0.05)
