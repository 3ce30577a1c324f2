"""``distill run | validate | schema``: the engine (core/) from the command line, without the service.

    distill run examples/mnist1d.yaml --out runs/mnist1d
    distill validate SPEC        distill schema

Exit codes: 0 success; 2 bad spec; 3 data missing; 4 diverged; 5 out of memory; 130 cancelled;
1 anything else.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import TaskID

from cli.views import print_report, progress_bar
from core.errors import (
    CancelledError,
    DataMissingError,
    DistilleryError,
    DivergedError,
    OutOfMemoryError,
    SpecError,
)
from core.estimate import Limits, check_limits, estimate
from core.sink import Progress as JobProgress
from core.sink import Sink
from core.spec import load_spec, spec_schema
from store.settings import Settings

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Distillery's knowledge-distillation engine."
)
console = Console(stderr=True)

EXIT_CODES: dict[type[DistilleryError], int] = {
    SpecError: 2,
    DataMissingError: 3,
    DivergedError: 4,
    OutOfMemoryError: 5,
    CancelledError: 130,
}


def default_data_root() -> Path:
    """``DISTILLERY_DATA_ROOT``, else ``./data``: a run without the service keeps its data beside it
    (the service's default, under ``DISTILLERY_HOME``, is for the jobs it runs)."""
    return Settings().data_root or Path("data")


class ConsoleSink(Sink):
    """A progress bar for the whole job, one line per finished epoch, Ctrl-C as cancellation."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = progress_bar(console, disable=quiet)
        self.task: TaskID = self.bar.add_task("starting", total=1.0, eta="?")
        self.stop_requested = False

    def progress(self, p: JobProgress) -> None:
        eta = "?" if p.eta_s is None else f"{p.eta_s:.0f}s"
        self.bar.update(
            self.task, completed=p.fraction, description=f"{p.stage} {p.epoch}/{p.epochs}", eta=eta
        )

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        if not self.quiet and (epoch % 10 == 0 or epoch == 1):
            self.bar.console.log(
                f"{stage} epoch {epoch}: loss {values['train/loss']:.4f}  "
                f"val top-1 {values['val/top1']:.4f}  "
                f"{values['samples_per_s']:.0f} samples/s"
            )

    def log(self, message: str) -> None:
        if not self.quiet:
            self.bar.console.log(message)

    def should_stop(self) -> bool:
        return self.stop_requested


def _fail(error: DistilleryError) -> None:
    console.print(f"[bold red]error[/] ({error.type}): {error}")
    code = next((c for cls, c in EXIT_CODES.items() if isinstance(error, cls)), 1)
    raise typer.Exit(code)


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Job spec, YAML or JSON.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory (resumes if it holds this job).")
    ],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    data_root: Annotated[
        Path | None,
        typer.Option(help="Where datasets and checkpoints live [env DISTILLERY_DATA_ROOT, default ./data]."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Run a job: train the teacher if needed, the labels-only baseline and the distilled student."""
    from core.runner import run_job  # torch is imported only for commands that train

    sink = ConsoleSink(quiet)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if sink.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        sink.stop_requested = True
        console.print("[yellow]stopping after the current step (Ctrl-C again to abort)[/]")

    signal.signal(signal.SIGINT, on_sigint)
    try:
        spec = load_spec(spec_path)
        with sink.bar:
            report = run_job(spec, out, data_root=data_root or default_data_root(), device=device, sink=sink)
    except DistilleryError as e:
        _fail(e)
    print_report(Console(), report)
    console.print(
        f"report: {out / 'report.json'}   student: {out / report.artifacts.get('student_torchscript', '')}"
    )


@app.command()
def validate(spec_path: Annotated[Path, typer.Argument(metavar="SPEC")]) -> None:
    """Check a spec and print it with every default filled in (and, on stderr, what it will cost)."""
    try:
        spec = load_spec(spec_path)
    except DistilleryError as e:
        _fail(e)
    sys.stdout.write(spec.model_dump_json(indent=2) + "\n")
    est = estimate(spec)
    for line in est.summary():
        console.print(line, highlight=False, markup=False)
    for v in check_limits(est, Limits()):
        console.print(f"over a default service limit: {v.field}: {v.message}", style="yellow", markup=False)


@app.command()
def schema() -> None:
    """Print the job spec's JSON Schema."""
    sys.stdout.write(json.dumps(spec_schema(), indent=2) + "\n")


def main() -> None:
    app()
