"""The training loop shared by every stage (teacher, baseline, student).

Data lives on the device as tensors and batches are drawn by indexing, with no DataLoader in the
way. Host syncs happen a few times a second (progress, cancellation, NaN checks) and at epoch
ends, not every step. Each epoch ends with a validation pass and an atomic checkpoint; a stage
started again over an existing checkpoint continues from it and ends where an uninterrupted run
would have ended (the RNG is re-seeded per epoch, the schedule is a function of the step).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.augment import Augment
from core.errors import CancelledError, DivergedError, OutOfMemoryError, SpecError
from core.files import atomic_path
from core.losses import Objective
from core.optim import build_optimizer, schedule
from core.seeding import derive_seed, seed_everything
from core.sink import Progress, Sink
from core.spec import OptimizerSpec, ScheduleSpec

CHECK_EVERY_S = 0.5  # how often the loop syncs with the host for progress, NaNs and cancellation


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


@torch.inference_mode()
def evaluate_split(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> dict[str, float]:
    """top-1, top-5 and mean cross-entropy of ``model`` on tensors already on its device."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss = 0.0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size]).float()
        yb = y[i : i + batch_size]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += int((top[:, 0] == yb).sum())
        correct5 += int((top == yb[:, None]).any(1).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    model.train(was_training)
    n = max(1, len(x))
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss / n}


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
    ) -> None:
        self.device = device
        self.sink = sink
        self.tracker = tracker
        self.amp_dtype = autocast_dtype(device, precision)
        self.eval_batch_size = eval_batch_size
        self.seed = seed

    def fit(
        self,
        plan: StagePlan,
        model: nn.Module,
        objective: Objective,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        ckpt_dir: Path,
        augment: Augment | None = None,
        forward_model: nn.Module | None = None,
    ) -> StageResult:
        """Train ``model`` on (raw inputs, target distributions) and keep the selected epoch's weights."""
        x_train, targets = train
        n = len(x_train)
        bs = min(plan.batch_size, n)
        steps = max(1, n // bs)
        total_steps = plan.epochs * steps
        params = [*model.parameters(), *objective.parameters()]
        opt = build_optimizer(plan.optimizer, params)
        base_lr = opt.param_groups[0]["lr"]
        lr_fn = schedule(plan.schedule, base_lr, steps, total_steps)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = self._resume(ckpt_dir, model, objective, opt, scaler)
        if state["epoch"]:
            self.sink.log(f"resumed {plan.stage} after epoch {state['epoch']} from its checkpoint")
        fwd = forward_model or model
        history: list[dict[str, float]] = state["history"]
        best_epoch, best_top1 = state["best_epoch"], state["best_val_top1"]
        elapsed = state["elapsed_s"]

        model.train()
        for epoch in range(state["epoch"] + 1, plan.epochs + 1):
            seed_everything(derive_seed(self.seed, plan.stage, "epoch", epoch))
            t_epoch = time.monotonic()
            sums = self._run_epoch(
                plan, epoch, steps, bs, fwd, objective, opt, scaler, lr_fn, x_train, targets, augment, params
            )
            train_s = time.monotonic() - t_epoch
            metrics = {f"train/{k}": v / steps for k, v in sums.items()}
            val_m = evaluate_split(model, val[0], val[1], self.eval_batch_size)
            metrics |= {f"val/{k}": v for k, v in val_m.items()}
            metrics |= {"lr": lr_fn(epoch * steps - 1), "samples_per_s": steps * bs / train_s}
            elapsed += time.monotonic() - t_epoch
            history.append({"epoch": epoch, **metrics})
            # metrics before the checkpoint: a crash between the two replays the epoch (and its
            # metrics, which the sink keys idempotently) instead of losing them
            self.sink.metrics(plan.stage, epoch, epoch * steps, metrics)
            if val_m["top1"] > best_top1 or best_epoch == 0:
                best_epoch, best_top1 = epoch, val_m["top1"]
                atomic_save({"model": model.state_dict(), "epoch": epoch}, ckpt_dir / "best.pt")
            atomic_save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "objective": objective.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": history,
                    "best_epoch": best_epoch,
                    "best_val_top1": best_top1,
                    "elapsed_s": elapsed,
                },
                ckpt_dir / "last.pt",
            )
            self.tracker.report(plan.stage, epoch, plan.epochs, steps, steps)

        if plan.select == "best" and (ckpt_dir / "best.pt").exists():
            model.load_state_dict(
                torch.load(ckpt_dir / "best.pt", map_location=self.device, weights_only=True)["model"]
            )
        else:
            best_epoch = plan.epochs
        model.eval()
        rates = [h["samples_per_s"] for h in history]
        return StageResult(
            plan.stage,
            plan.epochs,
            best_epoch,
            best_top1,
            elapsed,
            sum(rates) / len(rates) if rates else 0.0,
            history,
        )

    def _run_epoch(
        self,
        plan: StagePlan,
        epoch: int,
        steps: int,
        bs: int,
        fwd: nn.Module,
        objective: Objective,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        lr_fn: Callable[[int], float],
        x_train: Tensor,
        targets: Tensor,
        augment: Augment | None,
        params: list[nn.Parameter],
    ) -> dict[str, float]:
        perm = torch.randperm(len(x_train), device=self.device)
        names = ["loss", *objective.names]
        sums = torch.zeros(len(names), device=self.device)  # summed on the device: no sync per step
        scaled = scaler.is_enabled()
        last_check = time.monotonic()
        for step in range(steps):
            idx = perm[step * bs : (step + 1) * bs]
            xb, yb = x_train[idx].float(), targets[idx]
            if augment is not None:
                xb, yb = augment(xb, yb)
            for group in opt.param_groups:
                group["lr"] = lr_fn((epoch - 1) * steps + step)
            with self._autocast():
                loss, terms = objective(fwd, xb, yb)
            opt.zero_grad(set_to_none=True)
            if scaled:  # fp16 autocast only: loss scaling against gradient underflow
                scaler.scale(loss).backward()
                if plan.grad_clip_norm is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, plan.grad_clip_norm)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if plan.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, plan.grad_clip_norm)
                opt.step()
            sums += torch.stack([loss.detach(), *terms.values()]).detach().float()
            if time.monotonic() - last_check > CHECK_EVERY_S:
                last_check = time.monotonic()
                self._check(plan.stage, epoch, sums[0])
                self.tracker.report(plan.stage, epoch, plan.epochs, step + 1, steps)
        self._check(plan.stage, epoch, sums[0])
        return dict(zip(names, sums.tolist(), strict=True))

    def _check(self, stage: str, epoch: int, loss_sum: Tensor) -> None:
        if not math.isfinite(float(loss_sum)):
            raise DivergedError(
                f"stage {stage!r} diverged in epoch {epoch}: the loss is {float(loss_sum)}; "
                "lower the learning rate or set grad_clip_norm"
            )
        if self.sink.should_stop():
            raise CancelledError(f"cancelled during stage {stage!r}, epoch {epoch}")

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
        path = ckpt_dir / "last.pt"
        if not path.exists():
            return {"epoch": 0, "history": [], "best_epoch": 0, "best_val_top1": -1.0, "elapsed_s": 0.0}
        state = torch.load(path, map_location=self.device, weights_only=True)
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        return state


# How an allocation that cannot be served reads (CPU allocator, MKL-DNN, HIP, MPS, CUDA drivers).
_OOM_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory")
# How a size that cannot exist reads: arithmetic on the shapes overflowed, or went negative.
_SIZE_MESSAGES = (
    "numel overflow",
    "calculation overflowed",
    "negative dimension",
    "without overflow",
    "integer overflow",
    "too large to",
    "overflow when unpacking",
)


def translate_oom(error: BaseException) -> BaseException:
    """Out-of-memory errors (CUDA's, the CPU allocator's, Python's ``MemoryError``) become the
    engine's typed ``OutOfMemoryError``; impossible sizes (overflowed or negative) a ``SpecError``.
    Anything else is returned as it is."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, torch.OutOfMemoryError):
        return OutOfMemoryError(f"the device ran out of memory: {first}")
    if isinstance(error, MemoryError):
        return OutOfMemoryError(f"the host ran out of memory: {first}")
    text = str(error).lower()
    if isinstance(error, RuntimeError) and any(m in text for m in _OOM_MESSAGES):
        return OutOfMemoryError(f"the job ran out of memory: {first}")
    if isinstance(error, OverflowError) or (
        isinstance(error, RuntimeError | ValueError | TypeError) and any(m in text for m in _SIZE_MESSAGES)
    ):
        return SpecError(
            f"the job asks for a tensor too large to exist; make the model or data smaller ({first})"
        )
    return error
