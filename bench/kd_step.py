"""Throughput of the core's distillation step against a bare hand-written PyTorch KD loop.

Same models, data, batch size, augmentation (mixup) and loss (T^2-scaled KL) on both sides; the
two are interleaved over several rounds in one process and the medians compared, so a noisy
shared machine slows both alike. The bare loop gets every advantage: pre-normalized data, no
validation, no checkpoints, no metric bookkeeping. Target: the core keeps >= 90% of its rate.

    .venv/bin/python bench/kd_step.py [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.augment import build_augmenter
from core.data import load_dataset
from core.data.base import DataSplits
from core.losses import Objective
from core.models import build_classifier
from core.sink import Sink
from core.spec import (
    AdamOptim,
    CifarResNetModel,
    CNN1DModel,
    CNNModel,
    ConstantSchedule,
    KDLoss,
    MixupAug,
    MLPModel,
    MNIST1DData,
    SyntheticData,
)
from core.trainer import ProgressTracker, StagePlan, TrainData, Trainer

TEMPERATURE = 4.0


@dataclass
class Workload:
    name: str
    data: object
    teacher: object
    student: object
    batch_size: int
    epochs: int


WORKLOADS = [
    Workload("mnist1d cnn1d(64) -> mlp(100,100)", MNIST1DData(), CNN1DModel(channels=64), MLPModel(), 100, 4),
    Workload(
        "synthetic 3x32x32 resnet20 -> cnn(32,64)",
        SyntheticData(train_size=1536, test_size=256),
        CifarResNetModel(depth=20),
        CNNModel(),
        128,
        1,
    ),
]


def bare_loop(
    teacher: nn.Module,
    student: nn.Module,
    x: Tensor,
    y: Tensor,
    bs: int,
    epochs: int,
    mixup: bool = True,
    temperature: float = TEMPERATURE,
) -> float:
    """What one would write by hand; returns samples per second. ``mixup=False``: the plain inputs."""
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    beta = torch.distributions.Beta(1.0, 1.0)
    n = len(x)
    steps = n // bs
    student.train()
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=x.device)
        for i in range(steps):
            xb = x[perm[i * bs : (i + 1) * bs]]
            if mixup:
                lam = beta.sample((len(xb),)).to(x.device).view(-1, *[1] * (xb.dim() - 1))
                xb = lam * xb + (1 - lam) * xb[torch.randperm(len(xb), device=x.device)]
            with torch.no_grad():
                t = teacher(xb)
            s = student(xb)
            loss = (
                F.kl_div(
                    F.log_softmax(s / temperature, 1),
                    F.log_softmax(t / temperature, 1),
                    reduction="batchmean",
                    log_target=True,
                )
                * temperature**2
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * steps * bs / (time.perf_counter() - start)


def core_loop(
    teacher: nn.Module, student: nn.Module, data: DataSplits, bs: int, epochs: int, device: torch.device
) -> tuple[float, float]:
    """The engine's trainer on the same work; returns (step samples/s, wall samples/s)."""
    plan = StagePlan("student", epochs, bs, AdamOptim(lr=1e-3), ConstantSchedule())
    trainer = Trainer(device, Sink(), ProgressTracker({"student": 1.0}, Sink()))
    objective = Objective([KDLoss(temperature=TEMPERATURE)], student, [teacher])
    augment = build_augmenter([MixupAug()], data)
    train = TrainData(data.train.x, data.train.y, data.num_classes)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = trainer.fit(plan, student, objective, train, (data.val.x, data.val.y), Path(tmp), augment)
        wall = time.perf_counter() - start
    steps = len(data.train) // bs
    return result.samples_per_s, epochs * steps * bs / wall


def run(w: Workload, rounds: int, device: torch.device) -> tuple[float, float, float]:
    data = load_dataset(w.data, Path("data"), seed=0)  # type: ignore[arg-type]
    for split in (data.train, data.val, data.test):
        split.x, split.y = split.x.to(device), split.y.to(device)
    torch.manual_seed(0)
    teacher = build_classifier(w.teacher, data, Path("data")).to(device).eval()  # type: ignore[arg-type]
    init = build_classifier(w.student, data, Path("data")).to(device)  # type: ignore[arg-type]
    x_norm = ((data.train.x.float() - teacher.mean) * teacher.inv_std).contiguous()
    bare, core_step, core_wall = [], [], []
    for _ in range(rounds):
        bare.append(
            bare_loop(teacher.net, copy.deepcopy(init).net, x_norm, data.train.y, w.batch_size, w.epochs)
        )
        step, wall = core_loop(teacher, copy.deepcopy(init), data, w.batch_size, w.epochs, device)
        core_step.append(step)
        core_wall.append(wall)
    return statistics.median(bare), statistics.median(core_step), statistics.median(core_wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(
        f"{'workload':44} {'bare/s':>10} {'core/s':>10} {'ratio':>7} {'core wall/s':>12} {'wall ratio':>10}"
    )
    worst = 1.0
    for w in WORKLOADS:
        bare, step, wall = run(w, args.rounds, device)
        worst = min(worst, step / bare)
        print(f"{w.name:44} {bare:10.0f} {step:10.0f} {step / bare:7.3f} {wall:12.0f} {wall / bare:10.3f}")
    print(
        f"core step / bare loop, worst workload: {worst:.3f} (target >= 0.90): "
        f"{'PASS' if worst >= 0.9 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
