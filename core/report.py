"""The job's report: test metrics and costs of every model, the KD gain, exports, compression.

``report.json`` keys are stable (documented in docs/report.md); accuracies are fractions in [0, 1].
``summary.md`` says the same for humans, including whether distillation helped beyond noise.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
from collections.abc import Sequence
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
from core.sink import Sink
from core.spec import JobSpec
from core.trainer import StageResult

REPORT_VERSION = 1


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
) -> tuple[dict[str, Any], Tensor]:
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
    return {k: _round(v) for k, v in out.items()}, logits


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


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def build_report(
    spec: JobSpec,
    out: Path,
    data: DataSplits,
    teachers: Sequence[nn.Module],
    teacher_data: Sequence[DataSplits],
    baseline: nn.Module | None,
    student: nn.Module,
    results: dict[str, StageResult],
    timing: dict[str, float],
    device: torch.device,
    sink: Sink,
) -> dict[str, Any]:
    bs, speed = spec.runtime.eval_batch_size, spec.runtime.measure_speed
    sink.log("evaluating on the test split")
    described = [
        describe_model(t, td, device, bs, speed=speed) for t, td in zip(teachers, teacher_data, strict=True)
    ]
    t_logits = [logits for _, logits in described]
    same_task = [td is data for td in teacher_data]
    ref = (
        torch.stack([lg for lg, same in zip(t_logits, same_task, strict=True) if same]).mean(0)
        if any(same_task)
        else None
    )
    teacher_info = []
    for i, ((info, _), tspec) in enumerate(zip(described, spec.all_teachers, strict=True)):
        stage = "teacher" if i == 0 else f"teacher{i}"
        info["source"] = "trained" if tspec.needs_training else "checkpoint"
        if stage in results:
            info["best_epoch"] = results[stage].best_epoch
        teacher_info.append(info)
    student_info, _ = describe_model(student, data, device, bs, speed=speed, reference=ref)
    student_info["best_epoch"] = results["student"].best_epoch
    baseline_info = None
    if baseline is not None:
        baseline_info, _ = describe_model(baseline, data, device, bs, speed=speed, reference=ref)
        baseline_info["best_epoch"] = results["baseline"].best_epoch

    artifacts = _exports(spec, out, data, student, student_info, sink)
    compressed = _compressed(spec, data, student, student_info, speed)
    base_top1 = baseline_info["test_top1"] if baseline_info else None
    text, se = verdict(student_info["test_top1"], base_top1, len(data.test))
    t0 = teacher_info[0]
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "name": spec.name,
        "seed": spec.seed,
        "dataset": {
            "kind": spec.data.kind,
            "num_classes": data.num_classes,
            "input_shape": list(data.input_shape),
            "train_size": len(data.train),
            "val_size": len(data.val),
            "test_size": len(data.test),
        },
        "teacher": t0,
        "teachers": teacher_info[1:],
        "baseline": baseline_info,
        "student": student_info,
        "kd_gain": _round(student_info["test_top1"] - baseline_info["test_top1"]) if baseline_info else None,
        "kd_gain_stderr": _round(se) if se is not None else None,
        "verdict": text,
        "compression": {
            "params_ratio": _ratio(t0["params"], student_info["params"]),
            "macs_ratio": _ratio(t0.get("macs"), student_info.get("macs")),
            "size_ratio": _ratio(t0["size_bytes"], student_info["size_bytes"]),
            "latency_speedup_cpu": _ratio(t0.get("latency_ms_cpu_b1"), student_info.get("latency_ms_cpu_b1")),
            "throughput_speedup_cpu": _ratio(
                student_info.get("throughput_cpu_per_s"), t0.get("throughput_cpu_per_s")
            ),
        },
        "compressed": compressed,
        "timing": {
            **{k: round(v, 2) for k, v in timing.items()},
            "distill_samples_per_s": round(results["student"].samples_per_s, 1),
        },
        "artifacts": artifacts,
        "environment": {
            "device": str(device),
            "torch": torch.__version__,
            "distillery": core.__version__,
            "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(),
        },
    }
    return report


def _exports(
    spec: JobSpec, out: Path, data: DataSplits, student: nn.Module, info: dict[str, Any], sink: Sink
) -> dict[str, str]:
    artifacts = export_student(
        student, sample=data.test.x[:8], formats=spec.export, out_dir=out, spec_json=spec.model_dump_json()
    )
    if "student_torchscript" in artifacts:
        # the exported file itself, evaluated on raw test inputs: what a user of the file will get
        info["exported_torchscript_test_top1"] = _round(
            verify_torchscript_accuracy(
                out / artifacts["student_torchscript"], data.test.x.cpu(), data.test.y.cpu()
            )
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
    return artifacts


def _compressed(
    spec: JobSpec, data: DataSplits, student: nn.Module, info: dict[str, Any], speed: bool
) -> list[dict[str, Any]]:
    rows = []
    cpu_student = copy.deepcopy(student).cpu().eval()
    for cfg in spec.compress:
        model = compress_model(cpu_student, cfg)
        logits = predict_logits(
            model, data.test.x.cpu(), batch_size=spec.runtime.eval_batch_size, device=torch.device("cpu")
        )
        row = describe_compression(cpu_student, model, cfg)
        row["test_top1"] = classification_metrics(logits, data.test.y.cpu())["top1"]
        row["top1_change"] = row["test_top1"] - info["test_top1"]
        if speed:
            s = measure_speed(model, data.test.x[:64].cpu().float(), threads=1)
            row["latency_ms_cpu_b1"] = s["latency_ms_b1"]
            row["throughput_cpu_per_s"] = s["throughput_per_s"]
        rows.append({k: _round(v) for k, v in row.items()})
    return rows


def summary_markdown(r: dict[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "—" if v is None else f"{100 * v:.2f}%"

    def num(v: Any) -> str:
        return "—" if v is None else f"{v:,}"

    def ms(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    rows = [("teacher", r["teacher"]), *[(f"teacher {i + 1}", t) for i, t in enumerate(r["teachers"])]]
    if r["baseline"]:
        rows.append(("baseline (labels only)", r["baseline"]))
    rows.append(("student (distilled)", r["student"]))
    lines = [
        f"# {r['name']}",
        "",
        r["verdict"] + ".",
        "",
        "| model | test top-1 | top-5 | agreement | ECE | params | MACs | size (bytes) "
        "| CPU latency b1 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {pct(m['test_top1'])} | {pct(m['test_top5'])} | {pct(m.get('agreement'))} | "
            f"{pct(m['test_ece'])} | {num(m['params'])} | {num(m.get('macs'))} | {num(m['size_bytes'])} | "
            f"{ms(m.get('latency_ms_cpu_b1'))} |"
        )
    c = r["compression"]
    lines += [
        "",
        f"Compression: {c['params_ratio']}x fewer parameters, {c['macs_ratio']}x fewer MACs, "
        f"{c['latency_speedup_cpu']}x faster at batch 1 on the CPU.",
        f"Distillation ran at {r['timing']['distill_samples_per_s']} samples/s; the job took "
        f"{r['timing'].get('total_s', '?')} s on {r['environment']['device']}.",
    ]
    for row in r["compressed"]:
        lines.append(
            f"Compressed ({row['kind']}): test top-1 {pct(row['test_top1'])}, "
            f"{row['size_bytes']:,} bytes; {row['note']}."
        )
    for row in r.get("source_tasks", []):
        kept = ", ".join(f"{who} {pct(row.get(f'{who}_top1'))}" for who in ("teacher", "student", "baseline"))
        lines.append(f"Source task kept ({row['dataset']} test top-1): {kept}.")
    lines += ["", "Artifacts: " + ", ".join(f"`{v}`" for v in r["artifacts"].values())]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "summary.md", summary_markdown(report))
