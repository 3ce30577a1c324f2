"""``distill sweep create|list|show|cancel``: sweeps on a running service (``client``).

    distill sweep create sweep.yaml     start a sweep: base spec, params, method, budget, early stopping
    distill sweep list                  your team's sweeps, newest first
    distill sweep show SWEEP            every trial with its parameters, status and objective, the best
                                        trial and the parameters' importances
    distill sweep cancel SWEEP          no trial starts any more; the live ones are cancelled

Exit codes as for jobs (cli/jobs.py): 5 not found, 6 invalid request, 7 the sweep has ended.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.remote import AsJson, Token, Url, connect, dump, out, print_json
from cli.views import local_time, styled_status
from client import Sweep, parse_spec_text

app = typer.Typer(no_args_is_help=True, help="Sweeps: a search over a spec's parameters, trials as jobs.")

SweepId = Annotated[str, typer.Argument(metavar="SWEEP", help="The sweep's id.")]


def _read(source: str) -> dict[str, Any]:
    if source == "-":
        return parse_spec_text(sys.stdin.read())
    try:
        return parse_spec_text(Path(source).read_text())
    except OSError as e:
        raise typer.BadParameter(f"cannot read {source}: {e.strerror or e}", param_hint="FILE") from None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(sweeps: list[Sweep]) -> Table:
    table = Table("ID", "NAME", "STATUS", "METHOD", "TRIALS", "BEST", "CREATED")
    for s in sweeps:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(s.trials_by_status.items()))
        made = sum(s.trials_by_status.values())
        table.add_row(
            s.id,
            s.name,
            styled_status(s.status),
            s.method,
            f"{made}/{s.max_trials}" + (f" ({counts})" if counts else ""),
            _num(s.best_value),
            local_time(s.created_at),
        )
    return table


def _details(sweep: Sweep) -> list[Any]:
    metric = sweep.objective.get("metric", "objective")
    head = Table.grid(padding=(0, 2))
    head.add_row("sweep", f"{sweep.id} ({sweep.name})")
    head.add_row("status", styled_status(sweep.status) + (f"  {sweep.message}" if sweep.message else ""))
    head.add_row("search", f"{sweep.method}, {sweep.max_trials} trial(s), {sweep.max_concurrent} at once")
    head.add_row("early stop", str(sweep.early_stopping.get("kind", "none")))
    if sweep.best is not None:
        head.add_row("best", f"trial {sweep.best.number}: {metric} {_num(sweep.best.objective)}")
    trials = Table("#", "JOB", "STATUS", metric.upper(), "PARAMS", "NOTE")
    for t in sweep.trials:
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in t.params.items())
        note = f"pruned at epoch {t.pruned_at_epoch}" if t.pruned_at_epoch else (t.error or "")
        trials.add_row(
            str(t.number), t.job_id or "-", styled_status(t.status), _num(t.objective), params, note
        )
    parts: list[Any] = [head, trials]
    if sweep.importances:
        imp = Table("PARAMETER", "IMPORTANCE")
        for name, value in sweep.importances.items():
            imp.add_row(name, f"{value:.3f}")
        parts.append(imp)
    elif sweep.importances_note:
        parts.append(f"importances: {sweep.importances_note}")
    return parts


@app.command("create")
def create(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="The sweep request, YAML or JSON ('-': stdin).")
    ],
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Start a sweep; its first trial is queued at once, the others once it trained the teacher."""
    with connect(url, token) as client:  # a file that is no mapping ends like a refused request
        sweep = client.create_sweep(_read(file))
    if as_json:
        print_json(dump(sweep))
        return
    out.print(f"sweep {sweep.id} started: {sweep.max_trials} trial(s), {sweep.method}", highlight=False)


@app.command("list")
def list_sweeps(
    limit: Annotated[int, typer.Option(min=1, max=200, help="At most this many, newest first.")] = 50,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Your team's sweeps, newest first."""
    with connect(url, token) as client:
        sweeps = client.sweeps(limit=limit).items
    if as_json:
        print_json([dump(s) for s in sweeps])
        return
    out.print(_table(sweeps))


@app.command("show")
def show(sweep_id: SweepId, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """A sweep: its trials (parameters, status, objective), the best trial, the importances."""
    with connect(url, token) as client:
        sweep = client.sweep(sweep_id)
    if as_json:
        print_json(dump(sweep))
        return
    for part in _details(sweep):
        out.print(part)


@app.command("cancel")
def cancel(sweep_id: SweepId, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Cancel a sweep and its live trials (exit 7 if it has ended)."""
    with connect(url, token) as client:
        sweep = client.cancel_sweep(sweep_id)
    if as_json:
        print_json(dump(sweep))
        return
    out.print(f"sweep {sweep.id} {sweep.status}", highlight=False)


@app.command("repeat")
def repeat(
    sweep_id: SweepId,
    repeats: Annotated[int, typer.Option(min=2, max=20, help="Seeds for the baseline/student pairs.")] = 3,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Run the best trial again with several seeds: a new job whose report gives the KD gain with
    a 95% confidence interval (exit 7 while no trial completed)."""
    with connect(url, token) as client:
        job = client.repeat_best(sweep_id, repeats)
    if as_json:
        print_json(dump(job))
        return
    print(job.id)
