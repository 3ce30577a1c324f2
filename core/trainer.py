"""The training loop shared by every stage (teacher, baseline, student).

Data that fits the memory budget lives on the device as tensors and batches are drawn by
indexing, with no DataLoader in the way; data that streams (``core.data.samples``) comes through
a ``DataLoader`` in the same batch order. Host syncs happen a few times a second (progress,
cancellation, NaN checks) and at epoch ends, not every step. Each epoch ends with a validation
pass and an atomic checkpoint; a stage started again over an existing checkpoint continues from
it and ends where an uninterrupted run would have ended (the RNG is re-seeded per epoch, the
schedule is a function of the step).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.augment import Augment
from core.data.samples import Samples, TrainingLoader
from core.distributed import SINGLE, SYNC_STEPS, Ranks
from core.errors import CancelledError, DivergedError
from core.files import atomic_path
from core.losses import Objective
from core.optim import build_optimizer, schedule
from core.seeding import derive_seed, rng_state, seed_everything, set_rng_state
from core.sink import Progress, Sink
from core.spec import OptimizerSpec, ScheduleSpec

CHECK_EVERY_S = 0.5  # how often the loop syncs with the host for progress, NaNs and cancellation
TEACHER_OUTPUTS_MAX_BYTES = 256 * 2**20
"""The most the teachers' kept outputs may take on the device (``Objective.keep_teacher_outputs``):
1.28M rows of 50 classes in float32; ImageNet's 1,000 classes run the teachers every step."""


@dataclass(frozen=True)
class StagePlan:
    stage: str
    epochs: int
    batch_size: int
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    grad_clip_norm: float | None = None
    select: Literal["best", "last"] = "best"


@dataclass
class StageResult:
    stage: str
    epochs: int
    best_epoch: int
    best_val_top1: float
    seconds: float
    samples_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)


class ProgressTracker:
    """Turns (stage, epoch, step) into a job-wide fraction and an ETA.

    Each stage weighs its planned steps times a cost factor (distillation also runs the teachers).
    """

    def __init__(self, weights: dict[str, float], sink: Sink) -> None:
        total = sum(weights.values()) or 1.0
        self.share = {k: v / total for k, v in weights.items()}
        self.order = list(weights)
        self.sink = sink
        self.t0 = time.monotonic()
        self.f0: float | None = None

    def fraction(self, stage: str, within: float) -> float:
        before = sum(self.share[s] for s in self.order[: self.order.index(stage)])
        return min(1.0, before + self.share[stage] * within)

    def report(self, stage: str, epoch: int, epochs: int, step: int, steps: int) -> None:
        f = self.fraction(stage, ((epoch - 1) * steps + step) / max(1, epochs * steps))
        if self.f0 is None:
            self.f0, self.t0 = f, time.monotonic()
        done = f - self.f0
        eta = (time.monotonic() - self.t0) / done * (1 - f) if done > 1e-3 else None
        self.sink.progress(Progress(stage, epoch, epochs, step, steps, round(f, 4), eta))


def atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@dataclass
class TrainData:
    """A stage's training rows: raw inputs (a tensor on the device, or streamed ``Samples``) and
    integer targets on the device, made one-hot batch by batch (``classes`` wide)."""

    x: Tensor | Samples
    labels: Tensor
    classes: int

    def __len__(self) -> int:
        return len(self.x)


@torch.inference_mode()
def evaluate_split(
    model: nn.Module, x: Tensor | Samples, y: Tensor, batch_size: int, ranks: Ranks = SINGLE
) -> dict[str, float]:
    """top-1, top-5 and mean cross-entropy of ``model``; ``y`` on its device, ``x`` there too or
    streamed (its batches travel there as they are read). Data-parallel, each rank evaluates the
    rows ``rank::world`` and the sums are added up: every rank gets the whole split's figures."""
    was_training = model.training
    model.eval()
    total = len(x)
    if ranks.parallel:
        rows = torch.arange(ranks.rank, len(x), ranks.world)
        x, y = x[rows.to(y.device) if isinstance(x, Tensor) else rows], y[rows.to(y.device)]
    correct1 = correct5 = 0
    loss = 0.0
    for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
        logits = model(xb.to(y.device, non_blocking=True)).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top[:, 0] == yb).sum())
        correct5 += int((top == yb[:, None]).any(1).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    model.train(was_training)
    if ranks.parallel:
        sums = ranks.sum(torch.tensor([correct1, correct5, loss], dtype=torch.float64, device=y.device))
        correct1, correct5, loss = int(sums[0]), int(sums[1]), float(sums[2])
    n = max(1, total)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss / n}


@dataclass
class Position:
    """Where a stage stands inside an epoch, as a step checkpoint keeps it: the epoch's batch
    order, the steps done, the loss sums so far, the generators' states and the time spent."""

    epoch: int
    step: int
    perm: Tensor
    sums: Tensor
    rng: dict[str, Any]
    seconds: float


@dataclass
class _Loop:
    """What one stage's epochs share: the plan, its step counts, the optimizer and schedule."""

    plan: StagePlan
    steps: int
    bs: int
    fwd: nn.Module
    objective: Objective
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    lr_fn: Callable[[int], float]
    params: list[nn.Parameter]
    augment: Augment | None
    save_step: Callable[[Position], None]
    data: TrainData
    stream: TrainingLoader | None  # None: the rows are tensors on the device
    keep_teachers: bool  # the teachers' outputs computed once and indexed (Objective.keep_teacher_outputs)


class Trainer:
    def __init__(
        self,
        device: torch.device,
        sink: Sink,
        tracker: ProgressTracker,
        *,
        precision: str = "auto",
        eval_batch_size: int = 1000,
        seed: int = 0,
        checkpoint_every_s: float = 300.0,
        ranks: Ranks = SINGLE,
        keep_teacher_outputs: bool = True,
    ) -> None:
        self.device = device
        self.keep_teacher_outputs = keep_teacher_outputs  # False: the teachers run at every step
        self.ranks = ranks
        self.sink = sink
        self.tracker = tracker
        self.amp_dtype = autocast_dtype(device, precision)
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.checkpoint_every_s = checkpoint_every_s

    def fit(
        self,
        plan: StagePlan,
        model: nn.Module,
        objective: Objective,
        train: TrainData,
        val: tuple[Tensor | Samples, Tensor],
        ckpt_dir: Path,
        augment: Augment | None = None,
        forward_model: nn.Module | None = None,
    ) -> StageResult:
        """Train ``model`` on ``train`` and keep the selected epoch's weights.

        Every epoch ends with ``last.pt``; inside an epoch, ``step.pt`` is written at most every
        ``checkpoint_every_s`` seconds. Started again over either, the stage resumes from the newer
        and ends with the weights an uninterrupted run ends with."""
        n = len(train)
        bs = min(plan.batch_size, n)
        steps = max(1, n // bs)
        params = [*model.parameters(), *objective.parameters()]
        opt = build_optimizer(plan.optimizer, params)
        lr_fn = schedule(plan.schedule, opt.param_groups[0]["lr"], steps, plan.epochs * steps)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = self._resume(ckpt_dir, model, objective, opt, scaler)
        position: Position | None = state.get("position")
        self._say_resumed(plan.stage, state, steps)
        save_step = functools.partial(
            self._save_step, ckpt_dir / "step.pt", model, objective, opt, scaler, state
        )
        stream = None
        if isinstance(train.x, Samples):
            stream = TrainingLoader(
                train.x, bs, steps, self.device, rank=self.ranks.rank, world=self.ranks.world
            )
        loop = _Loop(
            plan,
            steps,
            bs,
            self._forward(model, forward_model),
            objective,
            opt,
            scaler,
            lr_fn,
            params,
            augment,
            save_step,
            train,
            stream,
            # a row's teacher outputs are the same at every epoch when the teachers see the row
            # as it is stored: no augmentation, rows on the device
            self.keep_teacher_outputs
            and augment is None
            and stream is None
            and objective.can_keep_teacher_outputs(),
        )
        model.train()
        if state["epoch"] < plan.epochs:  # training starts now: say so before its first step
            self.tracker.report(
                plan.stage, state["epoch"] + 1, plan.epochs, position.step if position else 0, steps
            )
        for epoch in range(state["epoch"] + 1, plan.epochs + 1):
            if position is None:
                seed_everything(derive_seed(self.seed, plan.stage, "epoch", epoch))
            t_epoch = time.monotonic() - (position.seconds if position else 0.0)  # the part done before
            sums, train_s = self._run_epoch(loop, epoch, position)
            position = None
            metrics = {f"train/{k}": v / steps for k, v in sums.items()}
            val_m = evaluate_split(model, val[0], val[1], self.eval_batch_size, self.ranks)
            metrics |= {f"val/{k}": v for k, v in val_m.items()}
            metrics |= {"lr": lr_fn(epoch * steps - 1), "samples_per_s": steps * bs / train_s}
            state["elapsed_s"] += time.monotonic() - t_epoch
            state["history"].append({"epoch": epoch, **metrics})
            # metrics before the checkpoint: a crash between the two replays the epoch (and its
            # metrics, which the sink keys idempotently) instead of losing them
            self.sink.metrics(plan.stage, epoch, epoch * steps, metrics)
            main = self.ranks.main  # data-parallel: one rank writes, every rank holds the same state
            if val_m["top1"] > state["best_val_top1"] or state["best_epoch"] == 0:
                state["best_epoch"], state["best_val_top1"] = epoch, val_m["top1"]
                if main:
                    atomic_save({"model": model.state_dict(), "epoch": epoch}, ckpt_dir / "best.pt")
            state["epoch"] = epoch
            if main:
                atomic_save(self._state(model, objective, opt, scaler, state), ckpt_dir / "last.pt")
                (ckpt_dir / "step.pt").unlink(missing_ok=True)  # older than last.pt from now on
            self.tracker.report(plan.stage, epoch, plan.epochs, steps, steps)
        objective.drop_teacher_outputs()
        self.ranks.barrier()  # best.pt is written before any rank reads it
        return self._result(plan, model, ckpt_dir, state)

    def _forward(self, model: nn.Module, compiled: nn.Module | None) -> nn.Module:
        """What the training steps call: the model (or its compiled form); data-parallel, wrapped
        in ``DistributedDataParallel``, which averages the gradients over the ranks."""
        if not self.ranks.parallel:
            return compiled if compiled is not None else model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=ids)
        return cast(nn.Module, torch.compile(ddp)) if compiled is not None else ddp

    def _say_resumed(self, stage: str, state: dict[str, Any], steps: int) -> None:
        if (position := state.get("position")) is not None:
            self.sink.log(f"resumed {stage} in epoch {position.epoch}, after step {position.step} of {steps}")
        elif state["epoch"]:
            self.sink.log(f"resumed {stage} after epoch {state['epoch']} from its checkpoint")

    def _save_step(
        self,
        path: Path,
        model: nn.Module,
        objective: Objective,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        state: dict[str, Any],
        at: Position,
    ) -> None:
        atomic_save({**self._state(model, objective, opt, scaler, state), "position": vars(at)}, path)

    def _result(
        self, plan: StagePlan, model: nn.Module, ckpt_dir: Path, state: dict[str, Any]
    ) -> StageResult:
        best_epoch = state["best_epoch"]
        if plan.select == "best" and (ckpt_dir / "best.pt").exists():
            model.load_state_dict(
                torch.load(ckpt_dir / "best.pt", map_location=self.device, weights_only=True)["model"]
            )
        else:
            best_epoch = plan.epochs
        model.eval()
        rates = [h["samples_per_s"] for h in state["history"]]
        return StageResult(
            plan.stage,
            plan.epochs,
            best_epoch,
            state["best_val_top1"],
            state["elapsed_s"],
            sum(rates) / len(rates) if rates else 0.0,
            state["history"],
        )

    @staticmethod
    def _state(
        model: nn.Module,
        objective: Objective,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        state: dict[str, Any],
    ) -> dict[str, Any]:
        """A checkpoint: the weights, the optimizer and scaler, and the stage's bookkeeping."""
        kept = ("epoch", "history", "best_epoch", "best_val_top1", "elapsed_s")
        return {
            "model": model.state_dict(),
            "objective": objective.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            **{key: state[key] for key in kept},
        }

    def _batches(
        self, loop: _Loop, epoch: int, perm: Tensor, first: int
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The epoch's (float inputs, one-hot targets, row indices) on the device, in ``perm``'s
        order from step ``first``: indexed from tensors, or read through the streaming loader."""
        data, bs, rank, world = loop.data, loop.bs, self.ranks.rank, self.ranks.world
        if loop.stream is None:
            for step in range(first, loop.steps):
                idx = perm[step * bs : (step + 1) * bs][rank::world]
                yield data.x[idx].float(), F.one_hot(data.labels[idx], data.classes).float(), idx
        else:
            for xb, idx in loop.stream.epoch(epoch, perm, first):
                yield xb.float(), F.one_hot(data.labels[idx], data.classes).float(), idx

    def _keep_teacher_outputs(self, loop: _Loop) -> None:
        """The teachers' outputs for every training row, once per ``fit`` (as the steps would get
        them: under the same autocast), unless they would not fit in ``TEACHER_OUTPUTS_MAX_BYTES``."""
        assert isinstance(loop.data.x, Tensor)
        with self._autocast():
            kept = loop.objective.keep_teacher_outputs(
                loop.data.x, self.eval_batch_size, TEACHER_OUTPUTS_MAX_BYTES
            )
        if kept:
            self.sink.log(
                f"{loop.plan.stage}: the teachers' outputs for the {len(loop.data):,} training rows "
                "computed once (no augmentation: the same every epoch)"
            )
        else:
            loop.keep_teachers = False

    def _run_epoch(self, loop: _Loop, epoch: int, resume: Position | None) -> tuple[dict[str, float], float]:
        """One epoch's steps, from ``resume``'s position if given; the loss sums and the seconds."""
        plan, steps, opt, scaler = loop.plan, loop.steps, loop.opt, loop.scaler
        names = ["loss", *loop.objective.names]
        if resume is None:
            perm = torch.randperm(len(loop.data), device=self.device)
            sums = torch.zeros(len(names), device=self.device)  # summed on the device: no sync per step
            first, spent = 0, 0.0
        else:
            perm, sums, first, spent = (
                resume.perm.to(self.device),
                resume.sums.to(self.device),
                resume.step,
                resume.seconds,
            )
            set_rng_state(resume.rng)
        scaled = scaler.is_enabled()
        started = last_check = last_save = time.monotonic()
        if loop.keep_teachers and not loop.objective.keeps_teacher_outputs:
            self._keep_teacher_outputs(loop)  # inside the epoch's time: it is the steps' work
        for step, (xb, yb, idx) in enumerate(self._batches(loop, epoch, perm, first), start=first):
            if loop.augment is not None:
                xb, yb = loop.augment(xb, yb)
            for group in opt.param_groups:
                group["lr"] = loop.lr_fn((epoch - 1) * steps + step)
            with self._autocast():
                loss, terms = loop.objective(loop.fwd, xb, yb, idx if loop.keep_teachers else None)
            opt.zero_grad(set_to_none=True)
            if scaled:  # fp16 autocast only: loss scaling against gradient underflow
                scaler.scale(loss).backward()
                self._average_objective_grads(loop)
                if plan.grad_clip_norm is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(loop.params, plan.grad_clip_norm)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                self._average_objective_grads(loop)
                if plan.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(loop.params, plan.grad_clip_norm)
                opt.step()
            sums += torch.stack([loss.detach(), *terms.values()]).detach().float()
            now = time.monotonic()
            # data-parallel ranks agree at fixed steps (their clocks differ); alone, by the clock
            due = (step + 1) % SYNC_STEPS == 0 if self.ranks.parallel else now - last_check > CHECK_EVERY_S
            if due:
                last_check = now
                save = now - last_save >= self.checkpoint_every_s and step + 1 < steps
                if self._check(plan.stage, epoch, sums[0], save):
                    last_save = now
                    if self.ranks.main:
                        done = spent + now - started
                        loop.save_step(Position(epoch, step + 1, perm, sums, rng_state(), done))
                self.tracker.report(plan.stage, epoch, plan.epochs, step + 1, steps)
        self._check(plan.stage, epoch, sums[0])
        if self.ranks.parallel:  # each rank's loss sums are over its share: the mean of the shares
            sums = self.ranks.sum(sums) / self.ranks.world
        return dict(zip(names, sums.tolist(), strict=True)), spent + time.monotonic() - started

    def _average_objective_grads(self, loop: _Loop) -> None:
        """The objective's own parameters (feature-KD projections) are outside the DDP-wrapped
        model: their gradients are averaged here, in one all-reduce."""
        if not self.ranks.parallel:
            return
        grads = [p.grad for p in loop.objective.parameters() if p.grad is not None]
        if grads:
            flat = self.ranks.sum(torch.cat([g.reshape(-1) for g in grads])) / self.ranks.world
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def _check(self, stage: str, epoch: int, loss_sum: Tensor, save: bool = False) -> bool:
        """Raise if the run diverged or was asked to stop; whether to take a step checkpoint now.
        Data-parallel, rank 0 decides for every rank."""
        diverged, stop = not math.isfinite(float(loss_sum)), self.sink.should_stop()
        diverged, stop, save = self.ranks.agree([diverged, stop, save], self.device)
        if diverged:
            raise DivergedError(
                f"stage {stage!r} diverged in epoch {epoch}: the loss is {float(loss_sum)}; "
                "lower the learning rate or set grad_clip_norm"
            )
        if stop:
            raise CancelledError(f"cancelled during stage {stage!r}, epoch {epoch}")
        return save

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _resume(
        self,
        ckpt_dir: Path,
        model: nn.Module,
        objective: Objective,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> dict[str, Any]:
        """The newer checkpoint's bookkeeping, its weights and optimizer loaded: ``step.pt`` (inside
        an epoch, with its ``position``) if it is newer than ``last.pt``, else ``last.pt``."""
        last, step = ckpt_dir / "last.pt", ckpt_dir / "step.pt"
        state: dict[str, Any] | None = None
        if last.exists():
            state = torch.load(last, map_location=self.device, weights_only=True)
        if step.exists():
            inside = torch.load(step, map_location=self.device, weights_only=True)
            # a step checkpoint of an epoch that last.pt already holds is stale (the stage was
            # stopped between saving last.pt and removing step.pt)
            if state is None or inside["epoch"] >= state["epoch"]:
                state = {**inside, "position": Position(**inside["position"])}
        if state is None:
            return {"epoch": 0, "history": [], "best_epoch": 0, "best_val_top1": -1.0, "elapsed_s": 0.0}
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        return state
