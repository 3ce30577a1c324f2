"""The teachers' outputs computed once per stage when every epoch would compute the same ones
(``Objective.keep_teacher_outputs``, ``Trainer``): the same losses, the teachers run once per
row instead of once per row and epoch, and every case where they would differ runs them per step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from core import trainer as trainer_module
from core.losses import Objective
from core.sink import Sink
from core.spec import AdamOptim, ConstantSchedule, HintLoss, KDLoss
from core.trainer import ProgressTracker, StagePlan, TrainData, Trainer

ROWS, FEATURES, CLASSES = 96, 8, 5


class Counted(nn.Module):
    """A teacher that counts the rows it was run on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.Dropout(0.5), nn.Linear(16, CLASSES))
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += len(x)
        out: Tensor = self.net(x)
        return out


class Logged(Sink):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def rows() -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    return torch.randn(ROWS, FEATURES), torch.randint(0, CLASSES, (ROWS,))


def student() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(FEATURES, 12), nn.ReLU(), nn.Linear(12, CLASSES))


def teacher() -> Counted:
    torch.manual_seed(2)
    return Counted().eval()


def test_kept_outputs_give_the_losses_the_teacher_gives() -> None:
    x, y = rows()
    net, t = student(), teacher()
    objective = Objective([KDLoss(temperature=4.0)], net, [t])
    assert objective.can_keep_teacher_outputs()
    assert objective.keep_teacher_outputs(x, batch_size=40, max_bytes=2**20)  # 3 batches, one short
    assert t.rows == ROWS
    idx = torch.tensor([5, 0, 77, 31])
    targets = nn.functional.one_hot(y[idx], CLASSES).float()
    kept, _ = objective(net, x[idx], targets, idx)
    assert t.rows == ROWS  # read, not run
    ran, _ = objective(net, x[idx], targets)
    assert t.rows == ROWS + len(idx)
    torch.testing.assert_close(kept, ran)


def test_outputs_are_not_kept_when_they_would_differ_or_not_fit() -> None:
    x, _ = rows()
    net = student()
    training = Counted().train()  # dropout on: another output every time
    assert not Objective([KDLoss()], net, [training]).can_keep_teacher_outputs()
    hinted = Objective([HintLoss(student_layer="0", teacher_layer="0")], net, [teacher()])
    assert not hinted.can_keep_teacher_outputs()  # the features are read during the forward
    small = Objective([KDLoss()], net, [teacher()])
    assert not small.keep_teacher_outputs(x, batch_size=32, max_bytes=ROWS * CLASSES * 4 - 1)
    assert not small.keeps_teacher_outputs


def fit(augment: bool, tmp_path: Path) -> tuple[Counted, Logged, float]:
    x, y = rows()
    net, t = student(), teacher()
    sink = Logged()
    trainer = Trainer(torch.device("cpu"), sink, ProgressTracker({"student": 1.0}, sink), eval_batch_size=50)
    plan = StagePlan("student", 3, 16, AdamOptim(lr=1e-2), ConstantSchedule())
    objective = Objective([KDLoss(temperature=4.0)], net, [t])
    flip = (lambda xb, yb: (-xb, yb)) if augment else None
    result = trainer.fit(plan, net, objective, TrainData(x, y, CLASSES), (x, y), tmp_path, flip)
    assert not objective.keeps_teacher_outputs  # let go when the stage ends
    return t, sink, result.history[-1]["train/loss"]


def test_a_stage_without_augmentation_runs_the_teachers_once_per_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, sink, kept_loss = fit(False, tmp_path / "kept")
    assert kept.rows == ROWS  # 3 epochs of 6 steps of 16: 288 rows without the kept outputs
    assert any("computed once" in line for line in sink.lines)
    augmented, sink, _ = fit(True, tmp_path / "augmented")
    assert augmented.rows == 3 * ROWS  # new inputs at every step: the teachers run on them
    assert not any("computed once" in line for line in sink.lines)
    monkeypatch.setattr(trainer_module, "TEACHER_OUTPUTS_MAX_BYTES", 0)  # too many to keep
    ran, _, ran_loss = fit(False, tmp_path / "ran")
    assert ran.rows == 50 + 3 * ROWS  # one batch to learn the outputs' size, then at every step
    assert kept_loss == pytest.approx(ran_loss, rel=1e-5)  # the same training either way
