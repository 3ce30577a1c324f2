"""Building the job's report: test metrics and costs of every model, the KD gain, exports, compression.

The report is a ``core.report_model.Report`` (torch-free, so the API and the client read it too);
``report.json`` is its JSON, with keys documented in docs/report.md. ``summary.md`` says the same
for humans, including whether distillation helped beyond noise.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import core
from core.compress import compress_model, describe_compression
from core.data.base import DataSplits
from core.evaluate import classification_metrics, measure_speed, model_cost, predict_logits, size_on_disk
from core.export import export_student, verify_torchscript_accuracy
from core.files import atomic_write_text
from core.report_model import (
    REPORT_VERSION,
    CompressedModel,
    CompressionRatios,
    DatasetInfo,
    Environment,
    LoaderInfo,
    ModelMetrics,
    Report,
    SourceTask,
    Timing,
)
from core.sink import Sink
from core.spec import JobSpec
from core.stagekeys import teacher_stage
from core.trainer import StageResult


def _round(value: Any, digits: int = 6) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def describe_model(
    model: nn.Module,
    data: DataSplits,
    device: torch.device,
    batch_size: int,
    *,
    speed: bool,
    reference: Tensor | None = None,
) -> tuple[ModelMetrics, Tensor]:
    """Test metrics and costs of one model, and its test logits (for agreement with the teacher)."""
    logits = predict_logits(model, data.test.x, batch_size=batch_size, device=device)
    ref = reference if reference is not None and reference.shape == logits.shape else None
    m = classification_metrics(logits, data.test.y, teacher_logits=ref)
    out: dict[str, Any] = {f"test_{k}": v for k, v in m.items() if k != "agreement"}
    if "agreement" in m:
        out["agreement"] = m["agreement"]
    sample = data.test.x[:1].float()
    out |= model_cost(model, sample)
    out["size_bytes"] = size_on_disk(model)
    if speed:
        s = measure_speed(model, data.test.x[:64].float(), threads=1)
        out["latency_ms_cpu_b1"] = s["latency_ms_b1"]
        out["throughput_cpu_per_s"] = s["throughput_per_s"]
    return ModelMetrics.model_validate({k: _round(v) for k, v in out.items()}), logits


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(1, n))


def verdict(student: float, baseline: float | None, n: int) -> tuple[str, float | None]:
    """Whether KD helped, judged against the binomial noise of two accuracies on ``n`` test samples."""
    if baseline is None:
        return "no labels-only baseline was trained, so the KD gain is unknown", None
    gain = student - baseline
    se = math.sqrt(_stderr(student, n) ** 2 + _stderr(baseline, n) ** 2)
    if gain > 2 * se:
        word = "helped"
    elif gain < -2 * se:
        word = "hurt"
    else:
        word = "made no difference beyond noise"
    return (
        f"distillation {word}: student {student:.4f} vs labels-only baseline {baseline:.4f} "
        f"({gain:+.4f}, standard error {se:.4f} on {n} test samples)"
    ), se


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


@dataclass
class StageOutputs:
    """What a job's stages produced, from which its report is built.

    ``teacher_data[i]`` is the data teacher ``i`` was evaluated on (the job's own, or its source
    task's); ``timing`` holds seconds per stage (``<stage>_s``); ``started`` is the job's start on
    the ``time.monotonic`` clock, for the report's ``total_s``.
    """

    data: DataSplits
    teachers: Sequence[nn.Module]
    teacher_data: Sequence[DataSplits]
    baseline: nn.Module | None
    student: nn.Module
    results: dict[str, StageResult]
    timing: dict[str, float]
    started: float
    source_tasks: list[SourceTask] = field(default_factory=list)


def build_report(spec: JobSpec, out: Path, stages: StageOutputs, device: torch.device, sink: Sink) -> Report:
    """Evaluate every model on the test split, export the student, and say what distillation did."""
    sink.log("evaluating on the test split")
    teachers, reference = _teachers(spec, stages, device)
    baseline, student = _students(spec, stages, device, reference)
    artifacts, exported_top1 = _exports(spec, out, stages.data, stages.student, sink)
    if exported_top1 is not None:
        student = student.model_copy(update={"exported_torchscript_test_top1": exported_top1})
    compressed = _compressed(spec, stages.data, stages.student, student.test_top1)
    text, se = verdict(student.test_top1, baseline.test_top1 if baseline else None, len(stages.data.test))
    return Report(
        report_version=REPORT_VERSION,
        name=spec.name,
        seed=spec.seed,
        dataset=_dataset(spec, stages.data),
        teacher=teachers[0],
        teachers=teachers[1:],
        baseline=baseline,
        student=student,
        kd_gain=_round(student.test_top1 - baseline.test_top1) if baseline else None,
        kd_gain_stderr=_round(se) if se is not None else None,
        verdict=text,
        compression=_compression(teachers[0], student),
        compressed=compressed,
        timing=_timing(stages),
        artifacts=artifacts,
        environment=_environment(device),
        source_tasks=stages.source_tasks,
    )


def _teachers(
    spec: JobSpec, stages: StageOutputs, device: torch.device
) -> tuple[list[ModelMetrics], Tensor | None]:
    """Each teacher's entry, and the mean logits of those that share the job's task (the
    reference the students' agreement is measured against; None when none does)."""
    bs, speed = spec.runtime.eval_batch_size, spec.runtime.measure_speed
    entries, same_task = [], []
    models = zip(stages.teachers, stages.teacher_data, spec.all_teachers, strict=True)
    for i, (model, tdata, tspec) in enumerate(models):
        entry, logits = describe_model(model, tdata, device, bs, speed=speed)
        extra: dict[str, Any] = {"source": "trained" if tspec.needs_training else "checkpoint"}
        if teacher_stage(i) in stages.results:
            extra["best_epoch"] = stages.results[teacher_stage(i)].best_epoch
        entries.append(entry.model_copy(update=extra))
        if tdata is stages.data:
            same_task.append(logits)
    return entries, torch.stack(same_task).mean(0) if same_task else None


def _students(
    spec: JobSpec, stages: StageOutputs, device: torch.device, reference: Tensor | None
) -> tuple[ModelMetrics | None, ModelMetrics]:
    """The labels-only baseline's entry (None when not trained) and the distilled student's."""
    bs, speed = spec.runtime.eval_batch_size, spec.runtime.measure_speed

    def entry(model: nn.Module, stage: str) -> ModelMetrics:
        info, _ = describe_model(model, stages.data, device, bs, speed=speed, reference=reference)
        return info.model_copy(update={"best_epoch": stages.results[stage].best_epoch})

    student = entry(stages.student, "student")
    return (entry(stages.baseline, "baseline") if stages.baseline is not None else None), student


def _dataset(spec: JobSpec, data: DataSplits) -> DatasetInfo:
    return DatasetInfo(
        kind=spec.data.kind,
        num_classes=data.num_classes,
        input_shape=list(data.input_shape),
        train_size=len(data.train),
        val_size=len(data.val),
        test_size=len(data.test),
        loader=None if data.loader is None else LoaderInfo.model_validate(asdict(data.loader)),
    )


def _compression(teacher: ModelMetrics, student: ModelMetrics) -> CompressionRatios:
    return CompressionRatios(
        params_ratio=_ratio(teacher.params, student.params),
        macs_ratio=_ratio(teacher.macs, student.macs),
        size_ratio=_ratio(teacher.size_bytes, student.size_bytes),
        latency_speedup_cpu=_ratio(teacher.latency_ms_cpu_b1, student.latency_ms_cpu_b1),
        throughput_speedup_cpu=_ratio(student.throughput_cpu_per_s, teacher.throughput_cpu_per_s),
    )


def _timing(stages: StageOutputs) -> Timing:
    return Timing.model_validate(
        {
            **{k: round(v, 2) for k, v in stages.timing.items()},
            "distill_samples_per_s": round(stages.results["student"].samples_per_s, 1),
            "total_s": round(time.monotonic() - stages.started, 2),
        }
    )


def _environment(device: torch.device) -> Environment:
    return Environment(
        device=str(device),
        torch=torch.__version__,
        distillery=core.__version__,
        python=platform.python_version(),
        cpu_threads=torch.get_num_threads(),
    )


def _exports(
    spec: JobSpec, out: Path, data: DataSplits, student: nn.Module, sink: Sink
) -> tuple[dict[str, str], float | None]:
    """The artifacts (names to paths relative to ``out``), and the exported TorchScript student's
    test top-1 (None when it was not exported)."""
    artifacts = export_student(
        student, sample=data.test.x[:8], formats=spec.export, out_dir=out, spec_json=spec.model_dump_json()
    )
    exported_top1 = None
    if "student_torchscript" in artifacts:
        # the exported file itself, evaluated on raw test inputs: what a user of the file will get
        exported_top1 = _round(
            verify_torchscript_accuracy(out / artifacts["student_torchscript"], data.test.x, data.test.y)
        )
    for stage in ("teacher", "baseline"):  # reusable weights: a trained teacher can be a later checkpoint
        path = out / "stages" / stage / "model.safetensors"
        if path.exists():
            artifacts[f"{stage}_safetensors"] = os.path.relpath(path, out)
    artifacts["report"] = "report.json"
    artifacts["summary"] = "summary.md"
    for name, rel in artifacts.items():
        if name not in ("report", "summary"):
            sink.artifact(name, out / rel)
    return artifacts, exported_top1


def _compressed(
    spec: JobSpec, data: DataSplits, student: nn.Module, student_top1: float
) -> list[CompressedModel]:
    rows = []
    cpu_student = copy.deepcopy(student).cpu().eval()
    for cfg in spec.compress:
        model = compress_model(cpu_student, cfg)
        logits = predict_logits(
            model, data.test.x, batch_size=spec.runtime.eval_batch_size, device=torch.device("cpu")
        )
        row = describe_compression(cpu_student, model, cfg)
        row["test_top1"] = classification_metrics(logits, data.test.y.cpu())["top1"]
        row["top1_change"] = row["test_top1"] - student_top1
        if spec.runtime.measure_speed:
            s = measure_speed(model, data.test.x[:64].cpu().float(), threads=1)
            row["latency_ms_cpu_b1"] = s["latency_ms_b1"]
            row["throughput_cpu_per_s"] = s["throughput_per_s"]
        rows.append(CompressedModel.model_validate({k: _round(v) for k, v in row.items()}))
    return rows


SUMMARY_NAMES = {"baseline": "baseline (labels only)", "student": "student (distilled)"}


def summary_markdown(r: Report) -> str:
    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.2f}%"

    def num(v: int | None) -> str:
        return "—" if v is None else f"{v:,}"

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:.3f}"

    lines = [
        f"# {r.name}",
        "",
        r.verdict + ".",
        "",
        "| model | test top-1 | top-5 | agreement | ECE | params | MACs | size (bytes) "
        "| CPU latency b1 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in r.models():
        lines.append(
            f"| {SUMMARY_NAMES.get(name, name)} | {pct(m.test_top1)} | {pct(m.test_top5)} | "
            f"{pct(m.agreement)} | {pct(m.test_ece)} | {num(m.params)} | {num(m.macs)} | "
            f"{num(m.size_bytes)} | {ms(m.latency_ms_cpu_b1)} |"
        )
    c = r.compression
    lines += [
        "",
        f"Compression: {c.params_ratio}x fewer parameters, {c.macs_ratio}x fewer MACs, "
        f"{c.latency_speedup_cpu}x faster at batch 1 on the CPU.",
        f"Distillation ran at {r.timing.distill_samples_per_s} samples/s; the job took "
        f"{r.timing.total_s} s on {r.environment.device}.",
    ]
    for row in r.compressed:
        lines.append(
            f"Compressed ({row.kind}): test top-1 {pct(row.test_top1)}, {row.size_bytes:,} bytes; {row.note}."
        )
    for task in r.source_tasks:
        kept = ", ".join(
            f"{who} {pct(top1)}"
            for who, top1 in (
                ("teacher", task.teacher_top1),
                ("student", task.student_top1),
                ("baseline", task.baseline_top1),
            )
        )
        lines.append(f"Source task kept ({task.dataset} test top-1): {kept}.")
    lines += ["", "Artifacts: " + ", ".join(f"`{v}`" for v in r.artifacts.values())]
    return "\n".join(lines) + "\n"


def write_report(report: Report, out: Path) -> None:
    atomic_write_text(out / "report.json", json.dumps(report.model_dump(mode="json"), indent=2))
    atomic_write_text(out / "summary.md", summary_markdown(report))
