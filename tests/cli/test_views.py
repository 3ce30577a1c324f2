"""What `distill` prints, from hand-made models (no server)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from cli.views import LiveView, age, metric_tables, print_report, progress_text, report_lines
from client import Event, Job, Metric, Update
from core.report_model import Report
from tests.reports import REPORT


def job(**fields: Any) -> Job:
    return Job.model_validate({"id": "j1", "name": "tiny", "status": "running", "attempt": 1, **fields})


def render(printer: Any) -> str:
    buffer = io.StringIO()
    printer(Console(file=buffer, width=120))
    return buffer.getvalue()


def test_the_report_shows_every_model_the_gain_and_the_ratios() -> None:
    report = Report.model_validate(REPORT)
    text = render(lambda c: print_report(c, report))
    assert REPORT["verdict"] in text
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert rows == ["teacher", "baseline", "student"]
    assert "0.9700" in text and "28,298" in text and "0.030" in text and "—" in text  # latencies not measured
    assert "0.8600" in text  # the student's agreement with the teacher
    assert report_lines(report) == [
        "KD gain (student − baseline, test top-1): +0.2230 ± 0.0190 (standard error)",
        "student vs teacher: 1.90x fewer parameters, 12.90x fewer MACs",
        "compressed (dynamic_int8): test top-1 0.8500 (-0.0050), 9 bytes",
        "the job took 43 s",
    ]


def test_extra_teachers_get_a_row_each_and_no_baseline_no_gain_line() -> None:
    extra = {**REPORT["teacher"], "test_top1": 0.91, "source": "checkpoint"}
    report = Report.model_validate({**REPORT, "teachers": [extra], "baseline": None, "kd_gain": None})
    text = render(lambda c: print_report(c, report))
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert rows == ["teacher", "teacher 1", "student"] and "0.9100" in text
    assert not any(line.startswith("KD gain") for line in report_lines(report))


def test_a_job_is_summed_up_by_where_it_stands() -> None:
    waiting = {"position": 2, "reason": "pool_busy", "message": "every matching GPU is busy"}
    assert progress_text(job(status="queued", waiting=waiting)) == "#2 pool_busy"
    progress = {"stage": "student", "epoch": 3, "epochs": 4, "fraction": 0.75}
    assert progress_text(job(progress=progress)) == "student 3/4 75%"
    result = {"student_top1": 0.855, "kd_gain": 0.223}
    assert progress_text(job(status="succeeded", result=result)) == "top-1 0.855 (+0.223)"
    failed = job(status="failed", error={"type": "diverged", "message": "NaN loss"})
    assert progress_text(failed) == "diverged"
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert [age(now - timedelta(seconds=s), now) for s in (5, 125, 7300, 200000)] == ["5s", "2m", "2h", "2d"]


def test_metrics_become_one_table_per_stage_with_epoch_rows() -> None:
    rows = [
        Metric(stage=stage, epoch=epoch, step=epoch, name=name, value=epoch / 10)
        for stage in ("teacher", "student")
        for epoch in (1, 2)
        for name in ("train/loss", "val/top1")
    ]
    tables = metric_tables(rows)
    assert [t.title for t in tables] == ["teacher", "student"]
    assert [c.header for c in tables[1].columns] == ["epoch", "train/loss", "val/top1"]
    assert tables[1].row_count == 2


def test_the_live_view_prints_a_line_per_change_when_not_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120)
    event = Event(id=1, kind="status", message="training", at=datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
    running = job(progress={"stage": "student", "epoch": 2, "epochs": 4, "fraction": 0.5, "eta_s": 3})
    metric = Metric(stage="student", epoch=2, name="val/top1", value=0.8125)
    with LiveView(console) as view:
        view(Update(job=job(status="starting"), changed=True))
        view(Update(job=running, changed=True, metrics=[metric], events=[event]))
        view(Update(job=running, changed=False))  # nothing new: no line
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("starting") and "attempt 1" in lines[0]
    assert lines[1].endswith("status: training")
    assert "student 2/4 val top-1 0.812" in lines[2] and "50.0%" in lines[2]
    assert len(lines) == 3


def test_the_live_view_draws_a_bar_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=True)
    running = job(progress={"stage": "teacher", "epoch": 1, "epochs": 5, "fraction": 0.2, "eta_s": 8})
    with LiveView(console) as view:
        view(Update(job=running, changed=True))
    assert "teacher 1/5" in buffer.getvalue() and "eta 8s" in buffer.getvalue()


REPEATS = {
    "k": 3,
    "rows": [
        {"repeat": 0, "seed": 11, "baseline_top1": 0.632, "student_top1": 0.855, "gain": 0.223},
        {"repeat": 1, "seed": 22, "baseline_top1": 0.64, "student_top1": 0.84, "gain": 0.2},
        {"repeat": 2, "seed": 33, "baseline_top1": 0.65, "student_top1": 0.86, "gain": 0.21},
    ],
    "mean_gain": 0.211,
    "std": 0.0115,
    "t": 4.3027,
    "ci95_low": 0.1824,
    "ci95_high": 0.2396,
}
CANDIDATES = [
    {"name": "teacher", "model": "teacher", "compression": "none", "test_top1": 0.97, "size_bytes": 113_000,
     "params_nonzero": 28_298, "latency_ms_cpu_b1": 0.2, "pareto": True},
    {"name": "teacher+prune+fine_tune", "model": "teacher", "compression": "prune+fine_tune",
     "test_top1": 0.91, "size_bytes": 64_321, "params_nonzero": 15_210, "latency_ms_cpu_b1": 0.21,
     "pareto": False},
    {"name": "student", "model": "student", "compression": "none", "test_top1": 0.855, "size_bytes": 61_000,
     "params_nonzero": 15_210, "latency_ms_cpu_b1": 0.03, "pareto": True},
]  # fmt: skip


def test_seeds_and_candidates_get_their_tables() -> None:
    report = Report.model_validate({**REPORT, "repeats": REPEATS, "candidates": CANDIDATES})
    assert "KD gain over 3 paired seeds: mean +0.2110, 95% confidence interval [+0.1824, +0.2396]" in (
        report_lines(report)
    )
    text = render(lambda c: print_report(c, report))
    assert "KD gain per seed" in text and "candidates" in text
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if "│" in line]
    seeds = [r for r in rows if r and r[0] in ("0", "1", "2")]
    assert [r[1] for r in seeds] == ["11", "22", "33"] and seeds[1][4] == "+0.2000"
    pruned = next(r for r in rows if r and r[0] == "teacher+prune+fine_tune")
    assert pruned == ["teacher+prune+fine_tune", "0.9100", "64,321", "15,210", "0.210", ""]
    assert [r[-1] for r in rows if r and r[0] == "student"][-1] == "yes"  # the last table's row


def test_one_seed_says_there_is_no_interval() -> None:
    one = {**REPEATS, "k": 1, "rows": REPEATS["rows"][:1], "std": None, "t": None}
    report = Report.model_validate({**REPORT, "repeats": {**one, "ci95_low": None, "ci95_high": None}})
    assert "one seed: no confidence interval across seeds (set repeats to 2 or more)" in report_lines(report)
    assert "KD gain per seed" not in render(lambda c: print_report(c, report))
