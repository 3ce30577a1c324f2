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
from core.candidates import Point, candidates_svg, pareto_front
from core.compress import (
    compress_model,
    compressed_size,
    count_nonzero_params,
    describe_compression,
    sparse_size,
)
from core.data.base import DataSplits
from core.evaluate import classification_metrics, measure_speed, model_cost, predict_logits, size_on_disk
from core.export import export_student, verify_torchscript_accuracy
from core.files import atomic_write_text
from core.repeats import gain_interval, interval_verdict, repeat_seed
from core.report_model import (
    REPORT_VERSION,
    Candidate,
    CompressedModel,
    CompressionRatios,
    DatasetInfo,
    Environment,
    LoaderInfo,
    ModelMetrics,
    RepeatRow,
    Repeats,
    Report,
    SourceTask,
    Timing,
    TransferChoice,
)
from core.sink import Sink
from core.spec import DynamicInt8Compress, JobSpec, PruneCompress, TeacherCompress
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


def test_top1(model: nn.Module, data: DataSplits, batch_size: int, device: torch.device) -> float:
    """The test top-1 of ``model`` as the report computes it for every model."""
    logits = predict_logits(model, data.test.x, batch_size=batch_size, device=device)
    return float(_round(classification_metrics(logits, data.test.y)["top1"]))


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


@dataclass(frozen=True)
class RepeatRun:
    """Repeat ``repeat`` ≥ 1 of the baseline/student pair (``repeats``): its seed and test top-1s."""

    repeat: int
    seed: int
    baseline_top1: float
    student_top1: float


@dataclass
class StageOutputs:
    """What a job's stages produced, from which its report is built.

    ``teacher_data[i]`` is the data teacher ``i`` was evaluated on (the job's own, or its source
    task's); ``timing`` holds seconds per stage (``<stage>_s``); ``started`` is the job's start on
    the ``time.monotonic`` clock, for the report's ``total_s``. ``repeats``: the pairs after the
    first (``repeats`` ≥ 2); ``teacher_pruned``: the teacher pruned to the student's size (and
    fine-tuned) when a ``compress`` item of kind ``teacher`` asks for it.
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
    repeats: list[RepeatRun] = field(default_factory=list)
    teacher_pruned: nn.Module | None = None
    transfer: TransferChoice | None = None  # the student's stage, when chosen on validation

    @property
    def student_stage(self) -> str:
        return "student" if self.transfer is None else self.transfer.stage


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
    repeats = _repeats(spec, baseline, student, stages.repeats)
    if repeats is not None and repeats.k >= 2:
        text = interval_verdict(gain_interval([row.gain for row in repeats.rows]))
    candidates = _candidates(spec, stages, {"teacher": teachers[0], "student": student}, baseline, compressed)
    if candidates:
        points = [Point(c.name, c.test_top1, c.size_bytes, c.latency_ms_cpu_b1) for c in candidates]
        atomic_write_text(out / "candidates.svg", candidates_svg(points, [c.pareto for c in candidates]))
        artifacts = {**artifacts, "candidates_plot": "candidates.svg"}
        sink.artifact("candidates_plot", out / "candidates.svg")
    return Report(
        report_version=REPORT_VERSION,
        name=spec.name,
        seed=spec.seed,
        dataset=_dataset(spec, stages.data),
        teacher=teachers[0],
        teachers=teachers[1:],
        baseline=baseline,
        student=student,
        transfer=stages.transfer,
        kd_gain=_round(student.test_top1 - baseline.test_top1) if baseline else None,
        kd_gain_stderr=_round(se) if se is not None else None,
        **({"repeats": repeats} if repeats is not None else {}),
        verdict=text,
        compression=_compression(teachers[0], student),
        compressed=compressed,
        **({"candidates": candidates} if candidates else {}),
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

    student = entry(stages.student, stages.student_stage)
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
            "distill_samples_per_s": round(stages.results[stages.student_stage].samples_per_s, 1),
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
        if isinstance(cfg, TeacherCompress):
            continue  # the teacher's compressions are candidates (``_candidates``), not student rows
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


def _repeats(
    spec: JobSpec, baseline: ModelMetrics | None, student: ModelMetrics, runs: Sequence[RepeatRun]
) -> Repeats | None:
    """The gains of the paired seeds (repeat 0: the report's own baseline and student) and their
    interval; None without a baseline."""
    if baseline is None:
        return None
    first = RepeatRun(0, repeat_seed(spec.seed, 0), baseline.test_top1, student.test_top1)
    rows = [
        RepeatRow(
            repeat=r.repeat,
            seed=r.seed,
            baseline_top1=r.baseline_top1,
            student_top1=r.student_top1,
            gain=_round(r.student_top1 - r.baseline_top1),
        )
        for r in [first, *runs]
    ]
    ci = gain_interval([r.student_top1 - r.baseline_top1 for r in [first, *runs]])
    return Repeats(
        k=ci.k,
        rows=rows,
        mean_gain=_round(ci.mean),
        std=_round(ci.std),
        t=_round(ci.t),
        ci95_low=_round(ci.low),
        ci95_high=_round(ci.high),
    )


def _candidate_label(cfg: DynamicInt8Compress | PruneCompress) -> str:
    return cfg.kind if isinstance(cfg, DynamicInt8Compress) else f"prune {cfg.amount:.0%}"


def _candidates(
    spec: JobSpec,
    stages: StageOutputs,
    entries: dict[str, ModelMetrics],
    baseline: ModelMetrics | None,
    compressed: list[CompressedModel],
) -> list[Candidate]:
    """Every candidate (teacher, its compressed forms, baseline, student, its compressed forms)
    with its accuracy, size and CPU latency, and whether it is on the Pareto front (see
    ``core.candidates.pareto_front``); empty when ``compress`` is."""
    if not spec.compress:
        return []
    rows: list[dict[str, Any]] = []

    def dense(name: str, model: nn.Module, m: ModelMetrics) -> None:
        nonzero = count_nonzero_params(model)
        rows.append(_candidate(name, name, "none", m.test_top1, m.size_bytes, nonzero, m.latency_ms_cpu_b1))

    dense("teacher", stages.teachers[0], entries["teacher"])
    cfg = next((c for c in spec.compress if isinstance(c, TeacherCompress)), None)
    if cfg is not None:
        rows += _teacher_candidates(spec, stages, cfg)
    if baseline is not None and stages.baseline is not None:
        dense("baseline", stages.baseline, baseline)
    dense("student", stages.student, entries["student"])
    student_items = [c for c in spec.compress if not isinstance(c, TeacherCompress)]
    for item, done in zip(student_items, compressed, strict=True):
        label = _candidate_label(item)
        rows.append(
            _candidate(
                f"student+{label}",
                "student",
                label,
                done.test_top1,
                done.size_bytes,
                done.params_nonzero,
                done.latency_ms_cpu_b1,
            )
        )
    names: dict[str, int] = {}
    for row in rows:  # the same compression listed twice: tell them apart
        names[row["name"]] = names.get(row["name"], 0) + 1
        if names[row["name"]] > 1:
            row["name"] = f"{row['name']} #{names[row['name']]}"
    points = [Point(r["name"], r["test_top1"], r["size_bytes"], r.get("latency_ms_cpu_b1")) for r in rows]
    front = pareto_front(points)
    return [Candidate.model_validate({**r, "pareto": on}) for r, on in zip(rows, front, strict=True)]


def _candidate(
    name: str, model: str, compression: str, top1: float, size: int, nonzero: int, latency: float | None
) -> dict[str, Any]:
    row = {
        "name": name,
        "model": model,
        "compression": compression,
        "test_top1": top1,
        "size_bytes": size,
        "params_nonzero": nonzero,
    }
    if latency is not None:
        row["latency_ms_cpu_b1"] = latency
    return row


def _teacher_candidates(spec: JobSpec, stages: StageOutputs, cfg: TeacherCompress) -> list[dict[str, Any]]:
    """The teacher int8-quantized and pruned to the student's size (fine-tuned), evaluated on the CPU."""
    cpu, data = torch.device("cpu"), stages.data
    rows = []

    def speed(model: nn.Module) -> float | None:
        if not spec.runtime.measure_speed:
            return None
        return float(_round(measure_speed(model, data.test.x[:64].cpu().float(), threads=1)["latency_ms_b1"]))

    if cfg.dynamic_int8:
        q = compress_model(copy.deepcopy(stages.teachers[0]).cpu().eval(), DynamicInt8Compress())
        top1 = test_top1(q, data, spec.runtime.eval_batch_size, cpu)
        size = compressed_size(q, DynamicInt8Compress())
        rows.append(
            _candidate(
                "teacher+dynamic_int8",
                "teacher",
                "dynamic_int8",
                top1,
                size,
                count_nonzero_params(q),
                speed(q),
            )
        )
    if stages.teacher_pruned is not None:
        pruned = copy.deepcopy(stages.teacher_pruned).cpu().eval()
        how = "prune+fine_tune" if cfg.fine_tune else "prune"
        top1 = test_top1(pruned, data, spec.runtime.eval_batch_size, cpu)
        rows.append(
            _candidate(
                f"teacher+{how}",
                "teacher",
                how,
                top1,
                sparse_size(pruned),
                count_nonzero_params(pruned),
                speed(pruned),
            )
        )
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
    lines += _summary_repeats(r) + _summary_candidates(r)
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


def _summary_repeats(r: Report) -> list[str]:
    if r.repeats is None or r.repeats.k < 2:
        return []
    rp = r.repeats
    lines = [
        "",
        f"KD gain over {rp.k} paired seeds: mean {rp.mean_gain:+.4f}, std {rp.std:.4f}, "
        f"95% confidence interval [{rp.ci95_low:+.4f}, {rp.ci95_high:+.4f}] (t = {rp.t:.4f}).",
        "",
        "| repeat | seed | baseline top-1 | student top-1 | gain |",
        "|---|---|---|---|---|",
    ]
    for row in rp.rows:
        lines.append(
            f"| {row.repeat} | {row.seed} | {100 * row.baseline_top1:.2f}% | {100 * row.student_top1:.2f}% "
            f"| {100 * row.gain:+.2f} pt |"
        )
    return lines


def _summary_candidates(r: Report) -> list[str]:
    if not r.candidates:
        return []
    lines = [
        "",
        "Candidates (Pareto: not beaten on accuracy, size and CPU latency at once; latencies within "
        "10% tie):",
        "",
        "| candidate | test top-1 | size (bytes) | nonzero params | CPU latency b1 (ms) | Pareto |",
        "|---|---|---|---|---|---|",
    ]
    for c in r.candidates:
        ms = "—" if c.latency_ms_cpu_b1 is None else f"{c.latency_ms_cpu_b1:.3f}"
        lines.append(
            f"| {c.name} | {100 * c.test_top1:.2f}% | {c.size_bytes:,} | {c.params_nonzero:,} | {ms} "
            f"| {'yes' if c.pareto else ''} |"
        )
    return lines


def write_report(report: Report, out: Path) -> None:
    atomic_write_text(out / "report.json", json.dumps(report.model_dump(mode="json"), indent=2))
    atomic_write_text(out / "summary.md", summary_markdown(report))
