"""The engine against its peer: the core's distillation stage vs torchdistill 1.1.5 vs a bare loop.

One KD job, three ways, interleaved over several rounds in one process (the order rotates each
round; medians), so a noisy shared machine slows all three alike:

- the job: MNIST-1D from the ``mnist1d`` package (3,600 train / 400 validation rows of 40 points,
  10 classes), teacher ``cnn1d(64)`` (frozen, eval mode, untrained: its weights do not change the
  cost), student ``mlp(100,100)``, both built by ``core.models.build_classifier`` (the same
  modules, normalization inside, on every side; each side starts from a copy of one student
  init); the loss T^2 * KL(softmax(t/T) || softmax(s/T)), T = 4, batch-mean; Adam (lr 1e-3),
  constant rate; batch 100, 36 steps an epoch (the tail dropped), no augmentation.
- core: ``core.trainer.Trainer.fit`` with ``Objective([KDLoss(temperature=4)])``, as a job runs
  it: on-device batches, loss sums, progress, a validation pass over the 400 rows each epoch
  (top-1, top-5, cross-entropy), ``last.pt`` (weights, optimizer, bookkeeping) written atomically
  each epoch and ``best.pt`` when validation top-1 improves, the best weights loaded at the end.
  With no augmentation, the frozen teacher's outputs are the same for a row at every epoch: the
  trainer computes them once, in its first epoch (counted in its step time), and the steps read
  them (``Objective.keep_teacher_outputs``). "core, teacher each step" is the same trainer with
  that turned off (``Trainer(keep_teacher_outputs=False)``): the teacher runs at every step, as
  on the other sides; printed beside the targets, without one.
- torchdistill: a ``DistillationBox`` from ``get_distillation_box`` and a config dict (datasets as
  ``TensorDataset``s, its ``RandomSampler`` train loader with ``drop_last`` and no workers, its
  ``WeightedSumLoss`` over its ``KDLoss`` with ``alpha=0`` (the KL term alone), weighted T^2 = 16,
  its ``Adam``, the teacher ``requires_grad: False``), driven by the training loop of its own
  example (``examples/torchvision/image_classification.py``): ``pre_epoch_process``,
  ``MetricLogger.log_every`` over its train loader, ``forward_process`` / ``post_forward_process``
  per batch, its ``evaluate`` (top-1 and top-5 over the validation loader, batch 1,000 as the
  core's), ``save_ckpt`` of the best (as the example) *and* of the last epoch every epoch (as the
  core), ``post_epoch_process``, the best checkpoint loaded back with ``load_ckpt`` at the end.
- bare: ``bench/kd_step.py``'s hand-written loop without mixup: pre-normalized inputs indexed by a
  permutation, the teacher under ``no_grad``, the same loss and Adam; no validation, checkpoints,
  metrics or logging.

Figures: "step" is samples per second over the training steps alone (the core's own
``samples_per_s``; torchdistill's epochs timed around its training loop; the bare loop whole);
"stage" is samples per second of the whole stage, validation, checkpoints and setup included
(the core's ``fit`` call; torchdistill from building its box to loading the best checkpoint).
Targets (issue 14): core step >= 0.97x the bare loop's and >= 1.2x torchdistill's; core stage
>= 1.1x torchdistill's.

Where the core's time went (py-spy over ``Trainer.fit`` on this job, 10 epochs, 3 runs):
    before (2 threads): the teacher's forward 54% (its three Conv1d 34%), the student's backward
    21%, Adam's step 10% (torch's per-parameter loop on CPU), the student's forward 10%, the KD
    loss 5%, batch indexing and one-hot 3%, validation 1%, checkpoints 0.7%; per-step Python
    (progress, loss sums, the schedule) under 1%. The step is compute: the teacher, then Adam.
    after (1 thread, ``_run_epoch``): the teacher's forward 60% (Conv1d 39%), backward 15%, Adam
    6% with the fused kernel (``core.optim``; the bare loop's per-parameter Adam: 13% of its
    time), the student's forward 7%, the KD loss 3.5% (T^2 applied in one op), batches 5%.
    torchdistill's extra cost is its loader (a ``Dataset`` read row by row and collated per batch).

One intra-op thread by default, for every side alike, and time read as that thread's CPU time
(``--clock cpu``, by every clock the three sides read: the trainer's, the bare loop's and this
script's): on this machine's two shared cores, two OpenMP threads stall at every parallel region
whenever the other core is busy elsewhere, and wall-clock figures then swing tenfold between
rounds. ``--threads 0 --clock wall`` measures torch's default threads by the wall clock.

    .venv/bin/python bench/kd_peer.py [--rounds 9] [--epochs 3] [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from kd_step import bare_loop

from core.data import load_dataset
from core.data.base import DataSplits
from core.losses import Objective
from core.models import build_classifier
from core.sink import Sink
from core.spec import AdamOptim, CNN1DModel, ConstantSchedule, KDLoss, MLPModel, MNIST1DData
from core.trainer import ProgressTracker, StagePlan, TrainData, Trainer

TEMPERATURE = 4.0
BATCH = 100
LR = 1e-3
EVAL_BATCH = 1000
TARGETS = {"step vs bare": 0.97, "step vs torchdistill": 1.2, "stage vs torchdistill": 1.1}


class Job:
    """The data and models every side shares (each side trains its own copy of the student)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.data: DataSplits = load_dataset(MNIST1DData(), Path("data"), seed=0)
        torch.manual_seed(0)
        self.teacher = build_classifier(CNN1DModel(channels=64), self.data, Path("data")).eval()
        self.teacher.requires_grad_(False)
        self.student_init = build_classifier(MLPModel(), self.data, Path("data"))
        self.steps = len(self.data.train) // BATCH

    def student(self) -> nn.Module:
        return copy.deepcopy(self.student_init)

    @property
    def samples(self) -> int:
        return self.epochs * self.steps * BATCH


# ---------------------------------------------------------------- the core


def run_core(job: Job, keep: bool = True) -> tuple[float, float]:
    """(step samples/s, stage seconds). ``keep=False``: the teacher runs at every step, as in the
    other sides, instead of once per row (``core.trainer.Trainer(keep_teacher_outputs=...)``)."""
    data, student = job.data, job.student()
    start = time.perf_counter()
    plan = StagePlan("student", job.epochs, BATCH, AdamOptim(lr=LR), ConstantSchedule())
    trainer = Trainer(
        torch.device("cpu"),
        Sink(),
        ProgressTracker({"student": 1.0}, Sink()),
        eval_batch_size=EVAL_BATCH,
        keep_teacher_outputs=keep,
    )
    objective = Objective([KDLoss(temperature=TEMPERATURE)], student, [job.teacher])
    train = TrainData(data.train.x, data.train.y, data.num_classes)
    with tempfile.TemporaryDirectory() as tmp:
        result = trainer.fit(plan, student, objective, train, (data.val.x, data.val.y), Path(tmp))
    stage = time.perf_counter() - start
    train_s = sum(job.steps * BATCH / h["samples_per_s"] for h in result.history)
    return job.samples / train_s, stage


# ---------------------------------------------------------------- torchdistill


def batches(dataset: Any, batch_size: int, drop_last: bool) -> BatchSampler:
    """A sampler of whole batches: the loader then reads each batch in one indexing of the tensors
    (``batch_size: None`` in the loader's kwargs), as the core does, instead of row by row."""
    return BatchSampler(RandomSampler(dataset), batch_size, drop_last)


def torchdistill_config(job: Job, batched: bool) -> dict[str, Any]:
    """The ``train`` section of a torchdistill config, as its YAML would load (classes in place of
    its ``!import_get`` tags). ``batched``: the train loader reads whole batches (``batches``)."""
    train_loader: dict[str, Any] = {
        "dataset_id": "train",
        "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
        "kwargs": {"batch_size": BATCH, "num_workers": 0, "drop_last": True},
    }
    if batched:
        train_loader["sampler"] = {
            "class_or_func": batches,
            "kwargs": {"batch_size": BATCH, "drop_last": True},
        }
        train_loader["kwargs"] = {"batch_size": None, "num_workers": 0}
    logits = {"student_module_path": ".", "student_module_io": "output"}
    logits |= {"teacher_module_path": ".", "teacher_module_io": "output"}
    kd = {"key": "KDLoss", "kwargs": {**logits, "temperature": TEMPERATURE, "alpha": 0.0}}
    model = {
        "forward_proc": "forward_batch_only",
        "sequential": [],
        "forward_hook": {"input": [], "output": []},
    }
    return {
        "log_freq": 1000,
        "num_epochs": job.epochs,
        "train_data_loader": train_loader,
        "val_data_loader": {
            "dataset_id": "val",
            "sampler": {"class_or_func": SequentialSampler, "kwargs": {}},
            "kwargs": {"batch_size": EVAL_BATCH, "num_workers": 0},
        },
        "teacher": {**model, "requires_grad": False},
        "student": {**model, "requires_grad": True},
        "optimizer": {"key": "Adam", "kwargs": {"lr": LR}},
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {"sub_terms": {"kd": {"criterion": kd, "weight": TEMPERATURE**2}}},
        },
    }


def _accuracy(outputs: Tensor, targets: Tensor, topk: tuple[int, ...]) -> list[Tensor]:
    """``compute_accuracy`` of torchdistill's example script."""
    with torch.no_grad():
        _, preds = outputs.topk(max(topk), 1, True, True)
        corrects = preds.t().eq(targets[None])
        return [corrects[:k].flatten().sum(dtype=torch.float32) * (100.0 / targets.size(0)) for k in topk]


def run_torchdistill(job: Job, batched: bool = False) -> tuple[float, float]:
    """(step samples/s, stage seconds): torchdistill's example training loop, its box and helpers."""
    from torchdistill.common.main_util import load_ckpt, save_ckpt
    from torchdistill.core.distillation import get_distillation_box
    from torchdistill.misc.log import MetricLogger, SmoothedValue

    device = torch.device("cpu")
    d = job.data
    datasets = {"train": TensorDataset(d.train.x, d.train.y), "val": TensorDataset(d.val.x, d.val.y)}
    student = job.student()

    @torch.inference_mode()
    def evaluate(model: nn.Module, loader: Any) -> float:  # the example's, single-process
        model.eval()
        metric_logger = MetricLogger(delimiter="  ")
        for image, target in metric_logger.log_every(loader, 1000, "Validation:"):
            image, target = image.to(device, non_blocking=True), target.to(device, non_blocking=True)
            acc1, acc5 = _accuracy(model(image), target, topk=(1, 5))
            metric_logger.meters["acc1"].update(acc1.item(), n=image.shape[0])
            metric_logger.meters["acc5"].update(acc5.item(), n=image.shape[0])
        return float(metric_logger.acc1.global_avg)

    with tempfile.TemporaryDirectory() as tmp:
        best_path, last_path = f"{tmp}/best.pt", f"{tmp}/last.pt"
        start = time.perf_counter()
        box = get_distillation_box(
            job.teacher, student, datasets, torchdistill_config(job, batched), device, [], False, 1
        )
        best = 0.0
        train_s = 0.0
        for epoch in range(box.num_epochs):
            box.pre_epoch_process(epoch=epoch)
            t0 = time.perf_counter()
            metric_logger = MetricLogger(delimiter="  ")  # the example's train_one_epoch
            metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value}"))
            metric_logger.add_meter("img/s", SmoothedValue(window_size=10, fmt="{value}"))
            for sample_batch, targets, supp_dict in metric_logger.log_every(
                box.train_data_loader, 1000, f"Epoch: [{epoch}]"
            ):
                t_step = time.time()
                sample_batch, targets = sample_batch.to(device), targets.to(device)
                loss = box.forward_process(sample_batch, targets, supp_dict)
                box.post_forward_process(loss)
                metric_logger.update(loss=loss.item(), lr=box.optimizer.param_groups[0]["lr"])
                metric_logger.meters["img/s"].update(len(sample_batch) / (time.time() - t_step))
                if torch.isnan(loss) or torch.isinf(loss):
                    raise ValueError(f"The training loop was broken due to loss = {loss}")
            train_s += time.perf_counter() - t0
            val_top1 = evaluate(student, box.val_data_loader)
            if val_top1 > best:
                best = val_top1
                save_ckpt(student, box.optimizer, box.lr_scheduler, best, None, best_path)
            save_ckpt(student, box.optimizer, box.lr_scheduler, best, None, last_path)
            box.post_epoch_process()
        load_ckpt(best_path, model=student, strict=True)
        stage = time.perf_counter() - start
    return job.samples / train_s, stage


# ---------------------------------------------------------------- the bare loop


def run_bare(job: Job) -> tuple[float, float]:
    t = job.teacher
    x = ((job.data.train.x.float() - t.mean) * t.inv_std).contiguous()
    net = job.student().net
    rate = bare_loop(t.net, net, x, job.data.train.y, BATCH, job.epochs, mixup=False, temperature=TEMPERATURE)
    return rate, float("nan")


# ---------------------------------------------------------------- the comparison


def use_clock(clock: Callable[[], float]) -> None:
    """Every side's timer reads ``clock``: the trainer's (``time.monotonic``), the bare loop's and
    this script's (``time.perf_counter``)."""
    import kd_step

    import core.trainer

    core.trainer.time = types.SimpleNamespace(monotonic=clock)  # type: ignore[assignment]
    kd_step.time = types.SimpleNamespace(perf_counter=clock)  # type: ignore[assignment]
    globals()["time"] = types.SimpleNamespace(perf_counter=clock, time=time.time)


SIDES: dict[str, Callable[[Job], tuple[float, float]]] = {
    "core": run_core,
    "core, teacher each step": functools.partial(run_core, keep=False),
    "torchdistill": run_torchdistill,
    "torchdistill batched": functools.partial(run_torchdistill, batched=True),
    "bare": run_bare,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; 0: torch's default")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="cpu: needs --threads 1")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            parser.error("--clock cpu counts one thread's CPU time: use it with --threads 1")
        use_clock(time.thread_time)
    logging.getLogger().setLevel(logging.WARNING)  # torchdistill logs to the root logger
    import torchdistill

    job = Job(args.epochs)
    print(
        f"torch {torch.__version__}, torchdistill {torchdistill.__version__}, cpu, "
        f"{torch.get_num_threads()} thread(s), {args.clock} clock; MNIST-1D KD cnn1d(64) -> mlp(100,100), "
        f"batch {BATCH}, {args.epochs} epochs x {job.steps} steps; median of {args.rounds} interleaved rounds"
    )
    for side in SIDES.values():  # warm-up: first-call allocations and imports
        side(Job(1))
    step: dict[str, list[float]] = {k: [] for k in SIDES}
    stage: dict[str, list[float]] = {k: [] for k in SIDES}
    names = list(SIDES)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rate, seconds = SIDES[name](job)
            step[name].append(rate)
            stage[name].append(job.samples / seconds)
    med = {k: statistics.median(v) for k, v in step.items()}
    med_stage = {k: statistics.median(v) for k, v in stage.items() if k != "bare"}
    print(f"{'side':22} {'step samples/s':>15} {'stage samples/s':>16}   (min..max step)")
    for k in names:
        stage_s = f"{med_stage[k]:16.0f}" if k in med_stage else f"{'-':>16}"
        print(f"{k:22} {med[k]:15.0f} {stage_s}   ({min(step[k]):.0f}..{max(step[k]):.0f})")
    ratios = {
        "step vs bare": med["core"] / med["bare"],
        "step vs torchdistill": med["core"] / med["torchdistill"],
        "stage vs torchdistill": med_stage["core"] / med_stage["torchdistill"],
    }
    ok = True
    for what, ratio in ratios.items():
        passed = ratio >= TARGETS[what]
        ok &= passed
        print(f"core {what:22} {ratio:6.3f}x (target >= {TARGETS[what]}x): {'PASS' if passed else 'FAIL'}")
    print("PASS" if ok else "FAIL")
    each = "core, teacher each step"  # the same work as the other sides, step for step
    bare, peer = med[each] / med["bare"], med[each] / med["torchdistill"]
    whole = med_stage[each] / med_stage["torchdistill"]
    print(
        f"{each}: step {bare:.3f}x the bare loop's, {peer:.3f}x torchdistill's; stage {whole:.3f}x "
        "torchdistill's (no target: what the kept teacher outputs add is the difference)"
    )


if __name__ == "__main__":
    main()
