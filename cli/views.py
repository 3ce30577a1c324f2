"""What ``distill`` prints on a terminal, with rich: the one place that renders for people.

A job's report (docs/report.md), the same for ``distill run`` (the engine, here) and for a job on a
server; tables and one-line summaries of the client's jobs, metrics, artifacts and pool; and
``LiveView``, the progress display ``Client.wait`` feeds. The HTTP client (``client``) renders
nothing and needs no rich.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from client import Artifact, Event, Job, Metric, Pool, PoolJob, Update
from core.report_model import Report

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "pruned": "magenta",
    "cancelling": "yellow",
    "running": "cyan",
    "starting": "cyan",
    "retrying": "magenta",
}


def styled_status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'default')}]{status}[/]"


def age(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    seconds = max(0, int((now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def progress_text(job: Job) -> str:
    """Where the job stands, in a few words: its place in the queue, stage and epoch, or result."""
    p, result = job.progress, job.result
    if job.waiting is not None:
        return f"{job.waiting.place} {job.waiting.reason or 'waiting'}"
    if job.status == "succeeded" and result:
        gain = result.kd_gain
        return f"top-1 {_num(result.student_top1, '.3f')}" + (f" ({gain:+.3f})" if gain is not None else "")
    if job.error is not None:
        return job.error.type
    if p is not None and p.stage:
        return f"{p.stage} {p.epoch}/{p.epochs} {100 * (p.fraction or 0):.0f}%"
    return ""


def _num(value: Any, pattern: str) -> str:
    return "—" if value is None else format(value, pattern)


def report_table(report: Report) -> Table:
    """One row per model (teachers, the labels-only baseline, the distilled student)."""
    table = Table(caption="baseline: the student's architecture trained on labels alone")
    for col in ("model", "test top-1", "top-5", "agree", "params", "MACs", "size (bytes)", "CPU ms b1"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in report.models():
        table.add_row(
            name,
            _num(m.test_top1, ".4f"),
            _num(m.test_top5, ".4f"),
            _num(m.agreement, ".4f"),
            _num(m.params, ","),
            _num(m.macs, ","),
            _num(m.size_bytes, ","),
            _num(m.latency_ms_cpu_b1, ".3f"),
        )
    return table


def report_lines(report: Report) -> list[str]:
    """The KD gain with its standard error, the compression ratios, post-training compression."""
    lines = []
    if report.kd_gain is not None:
        se = report.kd_gain_stderr
        lines.append(
            f"KD gain (student − baseline, test top-1): {report.kd_gain:+.4f}"
            + (f" ± {se:.4f} (standard error)" if se is not None else "")
        )
    if (t := report.transfer) is not None:
        lines.append(
            f"student kept from the {t.chosen} (validation top-1 {t.val_top1_transfer:.4f} with the "
            f"transfer set, {t.val_top1_plain:.4f} on the plain inputs)"
        )
    c = report.compression
    ratios = (
        (c.params_ratio, "fewer parameters"),
        (c.macs_ratio, "fewer MACs"),
        (c.size_ratio, "smaller"),
        (c.latency_speedup_cpu, "faster (CPU, batch 1)"),
    )
    parts = [f"{value:.2f}x {text}" for value, text in ratios if value is not None]
    if parts:
        lines.append("student vs teacher: " + ", ".join(parts))
    if (rp := report.repeats) is not None:
        if rp.k >= 2 and rp.ci95_low is not None and rp.ci95_high is not None:
            lines.append(
                f"KD gain over {rp.k} paired seeds: mean {rp.mean_gain:+.4f}, "
                f"95% confidence interval [{rp.ci95_low:+.4f}, {rp.ci95_high:+.4f}]"
            )
        else:
            lines.append("one seed: no confidence interval across seeds (set repeats to 2 or more)")
    for row in report.compressed:
        lines.append(
            f"compressed ({row.kind}): test top-1 {_num(row.test_top1, '.4f')} "
            f"({_num(row.top1_change, '+.4f')}), {_num(row.size_bytes, ',')} bytes"
        )
    lines.append(f"the job took {report.timing.total_s:.0f} s")
    return lines


def repeats_table(report: Report) -> Table | None:
    """The paired seeds, one row each (with two or more)."""
    if report.repeats is None or report.repeats.k < 2:
        return None
    table = Table(title="KD gain per seed", title_justify="left")
    for col in ("repeat", "seed", "baseline top-1", "student top-1", "gain"):
        table.add_column(col, justify="right")
    for row in report.repeats.rows:
        table.add_row(
            str(row.repeat),
            str(row.seed),
            _num(row.baseline_top1, ".4f"),
            _num(row.student_top1, ".4f"),
            _num(row.gain, "+.4f"),
        )
    return table


def candidates_table(report: Report) -> Table | None:
    """Every candidate model (teacher, its compressed forms, baseline, student, its compressed
    forms) by accuracy, size and CPU latency, the Pareto front marked."""
    if not report.candidates:
        return None
    table = Table(
        title="candidates",
        title_justify="left",
        caption="Pareto: no other candidate is as accurate, as small and as fast (latencies within 10% tie), "
        "and better in one",
    )
    for col in ("candidate", "test top-1", "size (bytes)", "nonzero params", "CPU ms b1", "Pareto"):
        # the name whole (it says what was done to which model); the numbers may wrap
        table.add_column(
            col, justify="left" if col in ("candidate", "Pareto") else "right", no_wrap=col == "candidate"
        )
    for c in report.candidates:
        table.add_row(
            c.name,
            _num(c.test_top1, ".4f"),
            _num(c.size_bytes, ","),
            _num(c.params_nonzero, ","),
            _num(c.latency_ms_cpu_b1, ".3f"),
            "[green]yes[/]" if c.pareto else "",
        )
    return table


def print_report(console: Console, report: Report) -> None:
    """The verdict, the table of models, the KD gain and the compression ratios; the seeds and the
    candidates where the job has them."""
    console.print(Text(report.verdict, style="bold"), soft_wrap=True)
    console.print(report_table(report))
    for line in report_lines(report):
        console.print(line, highlight=False, soft_wrap=True)
    for table in (repeats_table(report), candidates_table(report)):
        if table is not None:
            console.print(table)


def job_table(jobs: list[Job]) -> Table:
    """One line per job: id, name, status, where it stands, owner, age."""
    table = Table(box=None, pad_edge=False)
    for col in ("ID", "NAME", "STATUS", "PROGRESS", "OWNER", "AGE"):
        table.add_column(col, no_wrap=col in ("ID", "STATUS"))
    for j in jobs:
        status, where = styled_status(j.status), progress_text(j)
        table.add_row(j.id, j.name, status, where, j.owner or "", age(j.created_at))
    return table


def local_time(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if when else "-"


def job_details(job: Job) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows = [
        ("job", f"{job.id}  {job.name}"),
        ("status", f"{styled_status(job.status)} (attempt {job.attempt}/{job.max_attempts})"),
        ("owner", f"{job.owner} (team {job.team})"),
        ("queue", f"{job.queue}, priority {job.priority}"),
        ("created", f"{local_time(job.created_at)} ({age(job.created_at)} ago)"),
    ]
    rows += [("started", local_time(job.started_at))] if job.started_at else []
    rows += [("finished", local_time(job.finished_at))] if job.finished_at else []
    if job.waiting is not None:
        rows.append(("waiting", f"{job.waiting.place} ({job.waiting.reason}): {job.waiting.message}"))
    if job.progress is not None and job.progress.stage and not job.finished:
        rows.append(("progress", progress_text(job)))
    if job.error is not None:
        rows.append(("error", f"[red]{job.error.type}[/]: {job.error.message}"))
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def metric_tables(rows: list[Metric]) -> list[Table]:
    """One table per stage, in the order the stages ran; the last value of an epoch wins."""
    stages: dict[str, dict[int, dict[str, float | None]]] = {}
    names: dict[str, dict[str, None]] = {}  # insertion-ordered sets
    for m in rows:
        stages.setdefault(m.stage, {}).setdefault(m.epoch, {})[m.name] = m.value
        names.setdefault(m.stage, {})[m.name] = None
    tables = []
    for stage, epochs in stages.items():
        table = Table(title=stage, title_justify="left")
        table.add_column("epoch", justify="right")
        for metric_name in names[stage]:
            table.add_column(metric_name, justify="right")
        for epoch in sorted(epochs):
            table.add_row(str(epoch), *(_num(epochs[epoch].get(n), ".4g") for n in names[stage]))
        tables.append(table)
    return tables


def artifact_table(artifacts: list[Artifact], paths: dict[str, Path] | None) -> Table:
    table = Table(
        title="artifacts" if paths is None else "downloaded (SHA-256 verified)", title_justify="left"
    )
    for col in ("name", "path" if paths else "file", "bytes", "sha256"):
        # a long path wraps (folds) rather than being cut: it is what the user came for
        table.add_column(
            col,
            justify="right" if col == "bytes" else "left",
            no_wrap=col == "sha256",
            overflow="fold" if col == "path" else "ellipsis",
        )
    for a in artifacts:
        where = str(paths[a.id]) if paths else a.filename
        table.add_row(a.name, where, f"{a.size:,}", a.sha256)
    return table


def pool_views(view: Pool) -> list[RenderableType]:
    """The worker hosts (state, GPU type, free slots, devices, jobs on them) and the queue of each team."""
    workers = Table(title="workers", title_justify="left")
    for col in ("worker", "state", "gpu type", "free", "devices", "jobs"):
        workers.add_column(col)
    for w in view.workers:
        devices = ", ".join(f"{d.get('index', '?')}: {d.get('name', '?')}" for d in w.devices) or "-"
        free = "-" if w.slots is None else f"{w.free_slots or 0}/{w.slots}"
        jobs = "\n".join(_pool_job(job) for job in w.jobs or ([w.job] if w.job else [])) or "-"
        workers.add_row(w.id, styled_status(w.status), w.gpu_type, free, devices, jobs)
    teams = Table(title="queue per team", title_justify="left")
    for col in ("team", "queued", "running"):
        teams.add_column(col, justify="left" if col == "team" else "right")
    for t in view.teams:
        teams.add_row(t.team, str(t.queued), str(t.running))
    return [
        workers if view.workers else "no workers have registered",
        teams if view.teams else "no jobs queued or running",
    ]


def _pool_job(job: PoolJob) -> str:
    """A job on a host: which (or another team's), its state, the devices it holds."""
    devices = "" if job.devices is None else f" on {','.join(str(d) for d in job.devices)}"
    return f"{job.id or '(another team)'} {job.status}{devices}"


def progress_bar(console: Console, *, disable: bool) -> Progress:
    """A job's progress: stage and epoch, the bar, percent done, time left and time taken."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("eta {task.fields[eta]}"),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
    )


class LiveView:
    """A job as it runs: a progress bar on a terminal; on a pipe or log, a line per change (status,
    stage, every 5%). Events (state changes, the worker's log lines) are printed as they come."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.live = enabled and console.is_terminal
        self.bar = progress_bar(console, disable=not self.live)
        self.task: TaskID = self.bar.add_task("submitted", total=1.0, eta="?")
        self.last_line: tuple[str, str, int] | None = None
        self.val_top1: dict[str, float] = {}

    def __enter__(self) -> LiveView:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def __call__(self, update: Update) -> None:
        if not self.enabled:
            return
        for event in update.events:
            self.console.print(event_line(event), highlight=False, markup=False)
        self._note(update.metrics)
        job, p = update.job, update.job.progress
        text = self.describe(job)
        eta = "?" if p is None or p.eta_s is None else f"{p.eta_s:.0f}s"
        fraction = (p.fraction or 0.0) if p else 0.0
        self.bar.update(self.task, description=text, completed=fraction, eta=eta)
        if not self.live:
            key = (job.status, (p.stage or "") if p else "", int(fraction * 20))
            if key != self.last_line:
                self.last_line = key
                self.console.print(f"{job.status:<10} {text}  {100 * fraction:5.1f}%", highlight=False)

    def _note(self, metrics: list[Metric]) -> None:
        for m in metrics:
            if m.name == "val/top1" and m.value is not None:
                self.val_top1[m.stage] = m.value

    def describe(self, job: Job) -> str:
        p = job.progress
        if job.waiting is not None:
            return f"queued {job.waiting.place}: {job.waiting.message or job.waiting.reason}"
        if p is None or not p.stage or job.status not in ("running", "cancelling"):
            return f"{job.status} (attempt {job.attempt})"
        text = f"{p.stage} {p.epoch}/{p.epochs}"
        if p.stage in self.val_top1:
            text += f" val top-1 {self.val_top1[p.stage]:.3f}"
        return text if job.status == "running" else f"cancelling, {text}"


def event_line(event: Event) -> str:
    when = event.at.astimezone().strftime("%H:%M:%S") if event.at else "--:--:--"
    return f"{when} {event.kind}: {event.message}"
