"""Whole tiny jobs for issue 13: verdicts across seeds (``repeats``) and the teacher compressed
beside the student (``compress: [{kind: teacher}]``): stages, report, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from core.candidates import Point, pareto_front
from core.errors import CancelledError, SpecError
from core.repeats import gain_interval, repeat_seed
from core.report_model import Report
from core.runner import run_job
from tests.core.test_runner import TINY, Recorder, _weights, tiny

SHORT = {**TINY, "distill": {**TINY["distill"], "epochs": 2}, "export": ["safetensors"], "compress": []}
STAGES = [
    "teacher", "baseline", "student", "student.plain",
    "baseline.s1", "student.s1", "baseline.s2", "student.s2",
]  # fmt: skip


def run(out: Path, sink: Recorder | None = None, **changes: Any) -> Report:
    return run_job(tiny(**{**SHORT, **changes}), out, data_root=out.parent / "data", device="cpu", sink=sink)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report, Recorder]:
    out = tmp_path_factory.mktemp("repeats") / "job"
    sink = Recorder()
    return out, run(out, sink, repeats=3), sink


def test_repeats_train_the_pairs_and_the_teacher_once(three_seeds: tuple[Path, Report, Recorder]) -> None:
    out, _, sink = three_seeds
    epochs = {"teacher": 3}
    assert [(s, e) for s, e, _, _ in sink.rows] == [
        (stage, e) for stage in STAGES for e in range(1, epochs.get(stage, 2) + 1)
    ]
    for stage in STAGES:
        assert (out / "stages" / stage / "result.json").is_file(), stage
    fractions = [p.fraction for p in sink.progress_seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # every stage weighed


def test_the_report_gives_the_per_seed_gains_and_the_interval(
    three_seeds: tuple[Path, Report, Recorder],
) -> None:
    out, report, _ = three_seeds
    rp = report.repeats
    assert rp is not None and rp.k == 3 and [r.repeat for r in rp.rows] == [0, 1, 2]
    assert [r.seed for r in rp.rows] == [repeat_seed(0, r) for r in range(3)]
    assert len({r.seed for r in rp.rows}) == 3
    first = rp.rows[0]  # repeat 0 is the report's own pair: the fields older clients read
    assert report.baseline is not None
    assert (first.baseline_top1, first.student_top1) == (report.baseline.test_top1, report.student.test_top1)
    assert first.gain == report.kd_gain
    for row in rp.rows:
        assert row.gain == pytest.approx(row.student_top1 - row.baseline_top1, abs=1e-6)
    ci = gain_interval([r.student_top1 - r.baseline_top1 for r in rp.rows])
    assert ci.low is not None and ci.high is not None and ci.std is not None
    assert rp.mean_gain == pytest.approx(ci.mean, abs=1e-6) and rp.std == pytest.approx(ci.std, abs=1e-6)
    assert (rp.ci95_low, rp.ci95_high) == pytest.approx((ci.low, ci.high), abs=1e-6)
    word = "helped" if ci.low > 0 else "hurt" if ci.high < 0 else "made no clear difference at 3 seeds"
    assert report.verdict.startswith(f"distillation {word}: mean gain")
    written = json.loads((out / "report.json").read_text())
    assert written["repeats"]["rows"][2]["repeat"] == 2
    assert Report.model_validate(written).model_dump(mode="json") == written
    assert "KD gain over 3 paired seeds" in (out / "summary.md").read_text()
    assert report.timing.stages.keys() >= {"baseline_s", "distill_s", "repeats_s"}


def test_repeat_zero_is_the_single_seed_job(
    three_seeds: tuple[Path, Report, Recorder], tmp_path: Path
) -> None:
    ref_out, ref, _ = three_seeds
    out = tmp_path / "job"
    single = run(out)
    for stage in ("teacher", "baseline", "student"):
        for name, tensor in _weights(out, stage).items():
            assert torch.equal(tensor, _weights(ref_out, stage)[name]), (stage, name)
    assert single.kd_gain == ref.kd_gain
    rp = single.repeats
    assert rp is not None and rp.k == 1 and rp.ci95_low is None and rp.ci95_high is None and rp.std is None
    assert single.verdict.startswith("distillation ") and "standard error" in single.verdict
    # the other repeats' weights differ from repeat 0's (their own seed)
    s0, s1 = _weights(ref_out, "student"), _weights(ref_out, "student.s1")
    assert any(not torch.equal(s0[k], s1[k]) for k in s0)
    # an output directory written before `repeats` existed (its spec.json lacks the field) resumes
    stored = json.loads((out / "spec.json").read_text())
    del stored["repeats"]
    (out / "spec.json").write_text(json.dumps(stored))
    sink = Recorder()
    assert run(out, sink).kd_gain == single.kd_gain and sink.rows == []  # every stage reused


def test_repeats_need_the_baseline() -> None:
    with pytest.raises(SpecError, match=r"repeats: 2 seeds pair the student with the labels-only baseline"):
        tiny(**{**SHORT, "repeats": 2, "baseline": False})


# ---------------------------------------------------------------- the teacher compressed

COMPRESS = [{"kind": "dynamic_int8"}, {"kind": "prune", "amount": 0.5}, {"kind": "teacher"}]
SMALL_STUDENT = {"model": {"kind": "mlp", "hidden": [8]}}  # 418 parameters; the teacher has 858


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report, Recorder]:
    out = tmp_path_factory.mktemp("teacher-compressed") / "job"
    sink = Recorder()
    report = run(out, sink, compress=COMPRESS, student=SMALL_STUDENT, runtime={"measure_speed": True})
    return out, report, sink


def test_the_pruned_teacher_has_the_students_size_and_its_own_stage(
    compared: tuple[Path, Report, Recorder],
) -> None:
    out, report, sink = compared
    assert [s for s, _, _, _ in sink.rows].count("teacher_pruned") == 2  # the distillation budget
    weights = _weights(out, "teacher_pruned")
    nonzero = sum(int(torch.count_nonzero(t)) for t in weights.values())
    assert nonzero == pytest.approx(report.student.params, abs=3)  # a trained bias may be zero
    teacher = _weights(out, "teacher")
    assert weights.keys() == teacher.keys()
    for name, tensor in weights.items():  # pruned entries stayed zero through fine-tuning
        if name.endswith("weight"):
            assert int((tensor == 0).sum()) > 0, name
    assert any(not torch.equal(weights[k], teacher[k] * (weights[k] != 0)) for k in weights)  # it trained


def test_every_candidate_in_one_table_with_the_pareto_front(compared: tuple[Path, Report, Recorder]) -> None:
    out, report, _ = compared
    names = [c.name for c in report.candidates]
    assert names == [
        "teacher",
        "teacher+dynamic_int8",
        "teacher+prune+fine_tune",
        "baseline",
        "student",
        "student+dynamic_int8",
        "student+prune 50%",
    ]
    by = {c.name: c for c in report.candidates}
    assert by["teacher"].test_top1 == report.teacher.test_top1
    assert by["student"].size_bytes == report.student.size_bytes
    assert by["student+prune 50%"].size_bytes == report.compressed[1].size_bytes
    pruned = by["teacher+prune+fine_tune"]
    assert pruned.params_nonzero == pytest.approx(report.student.params, abs=3)
    assert pruned.size_bytes < report.teacher.size_bytes
    assert all(c.latency_ms_cpu_b1 is not None and c.latency_ms_cpu_b1 > 0 for c in report.candidates)
    for c in report.candidates:  # the strictly most accurate and the strictly smallest are never dominated
        others = [o for o in report.candidates if o is not c]
        if all(c.test_top1 > o.test_top1 for o in others) or all(c.size_bytes < o.size_bytes for o in others):
            assert c.pareto, c.name
    front = pareto_front(
        [Point(c.name, c.test_top1, c.size_bytes, c.latency_ms_cpu_b1) for c in report.candidates]
    )
    assert [c.pareto for c in report.candidates] == front
    assert [c.kind for c in report.compressed] == ["dynamic_int8", "prune"]  # student rows unchanged
    svg = (out / report.artifacts["candidates_plot"]).read_text()
    assert svg.startswith("<svg") and all(c.name in svg for c in report.candidates)
    assert "teacher+prune+fine_tune" in (out / "summary.md").read_text()


def test_the_pruned_teachers_stage_resumes(compared: tuple[Path, Report, Recorder], tmp_path: Path) -> None:
    ref_out, ref, _ = compared
    out = tmp_path / "job"
    changes = {"compress": COMPRESS, "student": SMALL_STUDENT, "runtime": {"measure_speed": True}}
    with pytest.raises(CancelledError):
        run(out, Recorder(stop_at=("teacher_pruned", 1)), **changes)
    assert (out / "stages" / "teacher_pruned" / "ckpt" / "last.pt").exists()
    sink = Recorder()
    report = run(out, sink, **changes)
    assert [e for s, e, _, _ in sink.rows] == [2]  # only the pruned teacher's second epoch ran again
    for name, tensor in _weights(ref_out, "teacher_pruned").items():
        assert torch.equal(tensor, _weights(out, "teacher_pruned")[name]), name
    pruned = {c.name: c.test_top1 for c in report.candidates}["teacher+prune+fine_tune"]
    assert pruned == {c.name: c.test_top1 for c in ref.candidates}["teacher+prune+fine_tune"]


def test_a_student_as_large_as_the_teacher_is_refused_before_training(tmp_path: Path) -> None:
    sink = Recorder()
    big = {"model": {"kind": "mlp", "hidden": [64]}}
    with pytest.raises(SpecError, match=r"compress.0: the teacher \(858 parameters"):
        run(tmp_path / "job", sink, compress=[{"kind": "teacher"}], student=big)
    assert sink.rows == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"compress": [{"kind": "teacher"}, {"kind": "teacher"}]},
            "compress.1: the teacher is compressed once",
        ),
        (
            {"compress": [{"kind": "teacher"}], "teacher": {"model": {"kind": "onnx", "path": "t.onnx"}}},
            "compress.0: a onnx teacher gives logits only",
        ),
        ({"compress": [{"kind": "teacher", "prune": False, "dynamic_int8": False}]}, "asks for nothing"),
    ],
)
def test_bad_teacher_compressions_are_spec_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        tiny(**{**SHORT, **changes})
