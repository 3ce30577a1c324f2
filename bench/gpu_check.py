"""GPU check: the engine's jobs on a CUDA device, timed, in one run that fits a few minutes.

Checks, in this order; each is caught and reported on its own (a failure never stops the others),
one that would pass the time budget (``--budget-s``) is skipped, and one still running when the
budget ends is stopped:

1. ``mnist1d``: the default MNIST-1D recipe (``{}``: CNN1D teacher, MLP student, KD on a mixup
   transfer set, baseline, every export) with 30 teacher and 30 distillation epochs instead of
   150 and 300, precision auto (bf16 autocast on an H200).
2. ``image/*``: synthetic images, 3x64x64, 10 classes, 20,000 train / 2,000 test; a
   cifar_resnet-20 teacher distilled into a cifar_resnet-8, batch 256, 3 student epochs.
   ``image/auto`` (bf16 autocast, channels-last: both automatic on CUDA) trains the teacher
   (3 epochs) and its weights become the teacher checkpoint of the others, so they differ only in
   their student stage: ``image/fp32`` (precision fp32), ``image/nchw`` (channels-last turned off
   by patching ``JobRun._place``), ``image/compile`` (``runtime.compile: true``).
3. ``bare-loop``: ``make bench``'s comparison (bench/kd_step.py, imported): the core's KD step
   against a bare hand-written loop, median of 3 interleaved rounds, on its two workloads and a
   GPU-sized one (3x64x64, 8,192 images, batch 256). On CUDA ``kd_step`` as it stands compares
   the core under bf16 autocast (its Trainer's precision auto) with a bare loop in fp32, so each
   workload runs twice: as ``make bench`` does, and with the whole round inside a bf16 autocast
   (both sides bf16): the matched ratio is the one held to kd_step's 0.90 target.
4. ``dp``: ``image/auto`` with ``resources.gpus: 2`` (two ranks, NCCL) against ``image/auto``,
   where two GPUs exist; else "2-GPU data-parallel: skipped (1 GPU)".

Figures: each stage's training samples/s per epoch (the engine's epoch metric; the first epoch
carries cuDNN's warm-up and compilation, so "steady" is the median of the later ones), test
top-1 of teacher, baseline and student, wall time; ratios of the steady student-stage rates;
the compile time as the first epoch's excess over a steady one, compile on less compile off.

Estimate on one H200 (16 CPU cores): about 10 s start, mnist1d 25 s, image/auto 35 s,
image/fp32 15 s, image/nchw 15 s, bare-loop 35 s, image/compile 60 s: some 3 minutes and a half
at most; with two GPUs, dp adds about 45 s. ``--budget-s`` (default 270) caps it whatever happens.

Without a CUDA device it says "no CUDA device: nothing checked" and exits 0; ``--allow-cpu`` runs
the same checks on the CPU at toy sizes (two gloo ranks for dp), to test this script.

    .venv/bin/python bench/gpu_check.py [--out results.json] [--only image,dp] [--budget-s 270]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch
from torch import nn

from core.data.base import DataSplits
from core.runner import JobRun, run_job
from core.sink import Sink
from core.spec import CifarResNetModel, CNNModel, MNIST1DData, SyntheticData, parse_spec
from core.stagekeys import teacher_stage
from core.trainer import TrainData, Trainer, autocast_dtype

TEACHER_FILE = "teacher.safetensors"  # image/auto's teacher, under the data root, for the others


@dataclass(frozen=True)
class Sizes:
    mnist_epochs: int
    mnist_data: dict[str, Any]  # MNIST-1D's data section
    image: dict[str, int]  # the synthetic dataset
    batch: int
    teacher_depth: int
    student_depth: int
    teacher_epochs: int
    student_epochs: int
    rounds: int  # bare-loop rounds
    bare_extra: SyntheticData | None  # the bare-loop's GPU-sized workload
    estimate_s: dict[str, float]  # per check, to skip what would pass the budget


GPU = Sizes(
    mnist_epochs=30,
    mnist_data={},
    image={"size": 64, "channels": 3, "num_classes": 10, "train_size": 20_000, "test_size": 2_000},
    batch=256,
    teacher_depth=20,
    student_depth=8,
    teacher_epochs=3,
    student_epochs=3,
    rounds=3,
    bare_extra=SyntheticData(size=64, train_size=8192, test_size=512),
    estimate_s={
        "mnist1d": 25,
        "image/auto": 35,
        "image/fp32": 15,
        "image/nchw": 15,
        "bare-loop": 35,
        "image/compile": 60,
        "dp": 45,
    },
)
CPU = Sizes(
    mnist_epochs=2,
    mnist_data={"train_limit": 1000},
    image={"size": 16, "channels": 3, "num_classes": 10, "train_size": 640, "test_size": 128},
    batch=64,
    teacher_depth=8,
    student_depth=8,
    teacher_epochs=2,
    student_epochs=2,
    rounds=1,
    bare_extra=None,
    estimate_s={},
)


class CheckTimeout(Exception):
    pass


class CheckSkipped(Exception):
    pass


class JobFailed(Exception):
    """A job that failed, with the figures of the stages it finished (``partial``)."""

    def __init__(self, error: Exception, partial: dict[str, Any]) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.partial = partial


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``CheckTimeout`` in this (main) thread once ``seconds`` have passed."""

    def stop(signum: int, frame: Any) -> None:
        raise CheckTimeout(f"stopped after {seconds:.0f} s: the time budget ran out")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Recorder(Sink):
    """Keeps each stage's epoch metrics; prints the engine's log lines with ``--verbose``."""

    def __init__(self, verbose: bool) -> None:
        self.epochs: dict[str, list[dict[str, float]]] = {}
        self.verbose = verbose

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        self.epochs.setdefault(stage, []).append({"epoch": epoch, **values})

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"      {message}", flush=True)


def rates(rows: list[dict[str, float]]) -> dict[str, Any]:
    """A stage's samples/s: per epoch, the first, and the steady rate (median of the later ones)."""
    per_epoch = [round(r["samples_per_s"], 1) for r in rows]
    steady = statistics.median(per_epoch[1:]) if len(per_epoch) > 1 else per_epoch[0]
    return {"per_epoch": per_epoch, "first": per_epoch[0], "steady": steady}


def student_figures(sink: Recorder, epochs: int) -> dict[str, Any]:
    """Every stage's rates, and the student stage's (None where it did not finish)."""
    stages = {stage: rates(rows) for stage, rows in sink.epochs.items()}
    student = stages.get("student")
    if student is None or len(student["per_epoch"]) < epochs:
        student = {"steady": None, "first": None}
    return {
        "student_samples_per_s": student["steady"],
        "student_first_epoch_samples_per_s": student["first"],
        "stages": stages,
    }


def layout(model: nn.Module) -> str | None:
    """The memory format of the model's first 4-D weight (None for a model without one)."""
    for p in model.parameters():
        if p.dim() == 4:
            cl = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            return "channels_last" if cl else "contiguous"
    return None


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    tmp: Path
    verbose: bool

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def data_root(self) -> Path:
        return self.tmp / "data"

    def job(self, name: str, spec: dict[str, Any], *, channels_last: bool = True) -> dict[str, Any]:
        """Run one job through ``run_job``; its figures. ``channels_last`` False places the models
        as they are (``JobRun._place`` puts image models on CUDA in channels-last)."""
        parsed = parse_spec({"name": f"gpu-check-{name.replace('/', '-')}", **spec})
        out = self.tmp / "jobs" / name.replace("/", "-")
        shutil.rmtree(out, ignore_errors=True)  # a rerun never resumes a stale one
        sink, layouts = Recorder(self.verbose), []
        place = JobRun._place

        def placed(run: JobRun, model: nn.Module, data: DataSplits) -> nn.Module:
            model = place(run, model, data) if channels_last else model.to(run.device)
            layouts.append(layout(model))
            return model

        start = time.perf_counter()
        try:
            with mock.patch.object(JobRun, "_place", placed):
                report = run_job(parsed, out, data_root=self.data_root, device=self.device.type, sink=sink)
        except Exception as e:  # the stages it finished still tell their throughput
            raise JobFailed(e, student_figures(sink, parsed.distill.epochs)) from e
        bs = parsed.distill.batch_size
        return {
            "wall_s": round(time.perf_counter() - start, 2),
            **student_figures(sink, parsed.distill.epochs),
            "student_epoch_samples": report.dataset.train_size // bs * bs,
            "teacher_top1": report.teacher.test_top1,
            "baseline_top1": report.baseline.test_top1 if report.baseline is not None else None,
            "student_top1": report.student.test_top1,
            "timing": report.timing.model_dump(mode="json"),
            "autocast": str(autocast_dtype(self.device, parsed.runtime.precision) or "none (fp32)"),
            "layout": sorted({x for x in layouts if x is not None}),
            "data_parallel_ranks": parsed.resources.gpus,
            "out_dir": str(out),
        }

    # ---------------------------------------------------------------- the checks

    def mnist1d(self) -> dict[str, Any]:
        e, data = self.sizes.mnist_epochs, {"kind": "mnist1d", **self.sizes.mnist_data}
        return self.job(
            "mnist1d", {"data": data, "teacher": {"train": {"epochs": e}}, "distill": {"epochs": e}}
        )

    def image_spec(self, *, precision: str = "auto", compile: bool = False, gpus: int = 1) -> dict[str, Any]:
        s = self.sizes
        teacher: dict[str, Any] = {"model": {"kind": "cifar_resnet", "depth": s.teacher_depth}}
        if (self.data_root / TEACHER_FILE).exists():
            teacher["checkpoint"] = TEACHER_FILE
        else:  # image/auto, or it failed: this job trains its own
            teacher["train"] = {"epochs": s.teacher_epochs, "batch_size": s.batch}
        return {
            "data": {"kind": "synthetic", **s.image},
            "teacher": teacher,
            "student": {"model": {"kind": "cifar_resnet", "depth": s.student_depth}},
            "distill": {"epochs": s.student_epochs, "batch_size": s.batch},
            "baseline": False,
            "export": ["safetensors"],
            "resources": {"gpus": gpus},
            "runtime": {"precision": precision, "compile": compile, "measure_speed": False},
        }

    def image_auto(self) -> dict[str, Any]:
        (self.data_root / TEACHER_FILE).unlink(missing_ok=True)
        # this one keeps every export: exporting a channels-last CUDA conv net is checked too
        spec = {**self.image_spec(), "export": ["safetensors", "torchscript", "onnx"]}
        try:
            return self.job("image/auto", spec)
        finally:  # its teacher serves the others even if a later part of the job failed
            weights = self.tmp / "jobs" / "image-auto" / "stages" / teacher_stage(0) / "model.safetensors"
            if weights.exists():
                shutil.copyfile(weights, self.data_root / TEACHER_FILE)

    def image_fp32(self) -> dict[str, Any]:
        return self.job("image/fp32", self.image_spec(precision="fp32"))

    def image_nchw(self) -> dict[str, Any]:
        return self.job("image/nchw", self.image_spec(), channels_last=False)

    def image_compile(self) -> dict[str, Any]:
        try:
            return self.job("image/compile", self.image_spec(compile=True))
        finally:
            torch._dynamo.reset()

    def bare_loop(self) -> dict[str, Any]:
        kd = load_kd_step()
        workloads = list(kd.WORKLOADS)
        if self.sizes.bare_extra is not None:
            extra = kd.Workload(
                "synthetic 3x64x64 resnet20 -> cnn(32,64)",
                self.sizes.bare_extra,
                CifarResNetModel(depth=20),
                CNNModel(),
                256,
                2,
            )
            workloads.append(extra)
        else:  # the CPU: toy sizes
            workloads = [
                dataclasses.replace(workloads[0], data=MNIST1DData(train_limit=1000), epochs=1),
                dataclasses.replace(
                    workloads[1], data=SyntheticData(size=16, train_size=256, test_size=64), batch_size=64
                ),
            ]
        variants: list[tuple[str, Callable[[], contextlib.AbstractContextManager[Any]]]] = [
            ("as make bench", contextlib.nullcontext)
        ]
        if self.cuda:
            variants.append(("matched bf16", lambda: torch.autocast("cuda", dtype=torch.bfloat16)))
        rows = []
        here = Path.cwd()
        os.chdir(self.tmp)  # kd_step loads its datasets from ./data
        try:
            for w in workloads:
                for variant, context in variants:
                    row: dict[str, Any] = {"workload": w.name, "variant": variant}
                    try:
                        with context():
                            bare, step, wall = kd.run(w, self.sizes.rounds, self.device)
                        row |= {
                            "bare_samples_per_s": round(bare, 1),
                            "core_samples_per_s": round(step, 1),
                            "ratio": round(step / bare, 4),
                            "core_wall_samples_per_s": round(wall, 1),
                            "wall_ratio": round(wall / bare, 4),
                        }
                    except CheckTimeout:
                        raise
                    except Exception as e:
                        row["error"] = f"{type(e).__name__}: {e}"
                    rows.append(row)
                    print(f"   {bare_row(row)}", flush=True)
        finally:
            os.chdir(here)
        target = "matched bf16" if self.cuda else "as make bench"
        held = [r["ratio"] for r in rows if r["variant"] == target and "ratio" in r]
        return {
            "kd_step_adapted": _TupleTrainer.adapted,
            "rounds": self.sizes.rounds,
            "rows": rows,
            "worst_ratio": min(held) if held else None,
            "ratio_held_to_target": target,
        }

    def dp(self) -> dict[str, Any]:
        if self.cuda and torch.cuda.device_count() < 2:
            raise CheckSkipped(f"2-GPU data-parallel: skipped ({torch.cuda.device_count()} GPU)")
        return self.job("dp/2", self.image_spec(gpus=2))


def load_kd_step() -> ModuleType:
    """bench/kd_step.py as a module (bench/ is not a package)."""
    path = Path(__file__).resolve().with_name("kd_step.py")
    spec = importlib.util.spec_from_file_location("kd_step", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kd_step"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    setattr(module, "Trainer", _TupleTrainer)  # noqa: B010 (a module mypy cannot see)
    return module


class _TupleTrainer(Trainer):
    """``kd_step.core_loop`` hands ``Trainer.fit`` an (inputs, one-hot targets) tuple, as it took
    before ``TrainData`` (811f8b9), and fails on it; converted here so the comparison still runs
    (``adapted`` in its figures says it was). Nothing to do once kd_step passes a ``TrainData``."""

    adapted = False

    def fit(self, plan: Any, model: nn.Module, objective: Any, train: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(train, tuple):
            x, targets = train
            train = TrainData(x, targets.argmax(1), targets.shape[1])
            _TupleTrainer.adapted = True
        return super().fit(plan, model, objective, train, *args, **kwargs)


# ---------------------------------------------------------------- reporting


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def bare_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['workload']:44} {r['variant']:14} failed: {r['error']}"
    return (
        f"{r['workload']:44} {r['variant']:14} bare {r['bare_samples_per_s']:9.0f}/s  "
        f"core {r['core_samples_per_s']:9.0f}/s  ratio {r['ratio']:.3f}"
    )


def one_line(result: dict[str, Any]) -> str:
    if "student_samples_per_s" in result:
        return (
            f"student {fmt(result['student_samples_per_s'], '.0f')}/s steady, "
            f"{fmt(result['student_first_epoch_samples_per_s'], '.0f')}/s first epoch; top-1 teacher "
            f"{fmt(result['teacher_top1'], '.3f')} baseline {fmt(result['baseline_top1'], '.3f')} "
            f"student {fmt(result['student_top1'], '.3f')}; autocast {result['autocast']}, "
            f"layout {'/'.join(result['layout']) or '-'}"
        )
    if "worst_ratio" in result:
        note = " (kd_step's tuple adapted to TrainData)" if result["kd_step_adapted"] else ""
        worst = fmt(result["worst_ratio"], ".3f")
        return f"core / bare loop{note} ({result['ratio_held_to_target']}), worst: {worst}"
    return ""


def ratios(checks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparisons, from the student stages' steady rates; None where a side is missing."""

    def rate(name: str) -> float | None:
        c = checks.get(name, {})
        return c.get("student_samples_per_s")  # also a failed job's, if its student stage finished

    def ratio(a: str, b: str) -> float | None:
        ra, rb = rate(a), rate(b)
        return round(ra / rb, 4) if ra and rb else None

    def first_epoch_excess(name: str) -> float | None:
        """Seconds the first student epoch took beyond a steady one."""
        c = checks.get(name, {})
        if c.get("status") != "ok" or not c["student_first_epoch_samples_per_s"]:
            return None
        n = c["student_epoch_samples"]
        return n / c["student_first_epoch_samples_per_s"] - n / c["student_samples_per_s"]

    on, off = first_epoch_excess("image/compile"), first_epoch_excess("image/auto")
    auto, dp = checks.get("image/auto", {}), checks.get("dp", {})
    both = auto.get("status") == "ok" and dp.get("status") == "ok"
    bare = checks.get("bare-loop", {})
    return {
        "bf16_over_fp32": ratio("image/auto", "image/fp32"),
        "channels_last_over_nchw": ratio("image/auto", "image/nchw"),
        "compile_over_eager": ratio("image/compile", "image/auto"),
        "compile_s": round(on - off, 2) if on is not None and off is not None else None,
        "core_over_bare_worst": bare.get("worst_ratio"),
        "dp2_over_1": ratio("dp", "image/auto"),
        "dp2_top1_minus_1": round(dp["student_top1"] - auto["student_top1"], 4) if both else None,
    }


def summary(checks: dict[str, dict[str, Any]], r: dict[str, Any], total_s: float, toy: bool) -> str:
    lines = [
        "",
        f"{'check':15} {'status':8} {'student/s':>10} {'1st ep/s':>10} {'teacher':>8} "
        f"{'baseline':>8} {'student':>8} {'wall s':>8}",
    ]
    for name, c in checks.items():
        lines.append(
            f"{name:15} {c['status']:8} {fmt(c.get('student_samples_per_s'), '10.0f'):>10} "
            f"{fmt(c.get('student_first_epoch_samples_per_s'), '10.0f'):>10} "
            f"{fmt(c.get('teacher_top1'), '.3f'):>8} {fmt(c.get('baseline_top1'), '.3f'):>8} "
            f"{fmt(c.get('student_top1'), '.3f'):>8} {fmt(c.get('check_s'), '8.1f'):>8}"
        )
        if c["status"] != "ok":
            lines.append(f"{'':15} {c.get('reason') or c.get('error')}")
    for row in checks.get("bare-loop", {}).get("rows", []):
        lines.append(f"  bare-loop: {bare_row(row)}")
    worst = r["core_over_bare_worst"]
    verdict = "" if worst is None or toy else f" (target >= 0.90: {'PASS' if worst >= 0.9 else 'FAIL'})"
    dp = checks.get("dp", {})
    dp_line = (
        f"{times(r['dp2_over_1'])} throughput, student top-1 {fmt(r['dp2_top1_minus_1'], '+.4f')}"
        if dp.get("status") == "ok"
        else dp.get("reason") or dp.get("error") or "not run"
    )
    lines += [
        "",
        f"bf16 autocast / fp32 (student stage)      {times(r['bf16_over_fp32'])}",
        f"channels-last / NCHW                      {times(r['channels_last_over_nchw'])}",
        f"torch.compile / eager (steady epochs)     {times(r['compile_over_eager'])}; compile time "
        f"{fmt(r['compile_s'], '.1f')} s (the 1st epoch's excess over a steady one, less eager's)",
        f"core KD step / bare loop, worst           {fmt(worst, '.3f')}{verdict}",
        f"2-GPU data-parallel / 1 GPU               {dp_line}",
        f"total {total_s:.0f} s",
    ]
    if toy:
        lines.append("(CPU, toy sizes: these figures test the script's code paths, not any speed)")
    return "\n".join(lines)


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": torch.cuda.device_count(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "autocast_auto": str(autocast_dtype(device, "auto")),
    }
    if device.type == "cuda":  # what "fp32" means here: convolutions in TF32 unless turned off
        flags = {
            "cudnn": lambda: torch.backends.cudnn.version(),
            "cudnn_benchmark": lambda: torch.backends.cudnn.benchmark,
            "conv_fp32_precision": lambda: getattr(torch.backends.cudnn, "conv").fp32_precision,  # noqa: B009
            "matmul_fp32_precision": lambda: torch.backends.cuda.matmul.fp32_precision,
        }
        for name, read in flags.items():
            try:
                env[name] = read()
            except Exception as e:  # a flag this torch does not have
                env[name] = f"unknown ({type(e).__name__})"
    return env


def write_json(path: Path | None, doc: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, help="write every figure as JSON here (rewritten after each check)"
    )
    parser.add_argument(
        "--allow-cpu", action="store_true", help="without CUDA, run the checks on the CPU, tiny"
    )
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip or stop checks past this (s)")
    parser.add_argument("--only", default="", help="comma-separated check names or prefixes (image, dp...)")
    parser.add_argument("--verbose", action="store_true", help="print the engine's log lines")
    args = parser.parse_args()
    started = time.monotonic()

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("no CUDA device: nothing checked")
        write_json(args.out, {"status": "no_cuda", "environment": environment(torch.device("cpu"))})
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sizes = GPU if device.type == "cuda" else CPU
    env = environment(device)
    print("gpu check: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    mode = "cuda" if device.type == "cuda" else "cpu-toy"
    doc: dict[str, Any] = {"mode": mode, "environment": env, "budget_s": args.budget_s, "checks": {}}

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        ctx = Context(device, sizes, Path(tmp), args.verbose)
        ctx.data_root.mkdir()
        # torch.compile starts from empty caches: its compile time is a cold start on every run
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(ctx.tmp / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(ctx.tmp / "triton")
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("mnist1d", ctx.mnist1d),
            ("image/auto", ctx.image_auto),
            ("image/fp32", ctx.image_fp32),
            ("image/nchw", ctx.image_nchw),
            ("bare-loop", ctx.bare_loop),
            ("image/compile", ctx.image_compile),
            ("dp", ctx.dp),
        ]
        wanted = [w for w in args.only.split(",") if w]
        for name, check in plan:
            if wanted and not any(name == w or name.startswith(w.rstrip("/") + "/") for w in wanted):
                continue
            left = args.budget_s - (time.monotonic() - started)
            estimate = sizes.estimate_s.get(name, 0.0)
            print(f"== {name}", flush=True)
            t0 = time.monotonic()
            try:
                if left < max(estimate, 5.0):
                    need = f"about {estimate:.0f} s needed, {max(0.0, left):.0f} s left"
                    raise CheckSkipped(f"skipped: past the time budget ({need})")
                with time_limit(left):
                    result = {"status": "ok", **check()}
            except CheckSkipped as e:
                result = {"status": "skipped", "reason": str(e)}
            except Exception as e:  # a failed check is reported; the others still run
                failed = e if not isinstance(e, JobFailed) else e.__cause__ or e
                tb = "".join(traceback.format_exception(failed)).strip().splitlines()
                partial = e.partial if isinstance(e, JobFailed) else {}
                status = "stopped" if isinstance(failed, CheckTimeout) else "failed"
                error = f"{type(failed).__name__}: {failed}"
                result = {"status": status, "error": error, **partial, "traceback": tb[-12:]}
            result["check_s"] = round(time.monotonic() - t0, 2)
            doc["checks"][name] = result
            if result["status"] == "ok":
                print(f"   ok in {result['check_s']:.1f} s: {one_line(result)}", flush=True)
            elif result["status"] == "skipped":
                print(f"   {result['reason']}", flush=True)
            else:
                print(f"   {result['status']}: {result.get('reason') or result.get('error')}", flush=True)
                if result["status"] == "failed":
                    print("\n".join(f"      {line}" for line in result["traceback"]), flush=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            doc["ratios"] = ratios(doc["checks"])
            doc["total_s"] = round(time.monotonic() - started, 1)
            write_json(args.out, doc)

    print(summary(doc["checks"], doc["ratios"], doc["total_s"], toy=device.type != "cuda"), flush=True)
    if args.out is None:
        print(json.dumps(doc))
    else:
        print(f"figures: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
