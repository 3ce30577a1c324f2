"""``distill``: one command for the engine and the service.

distill run SPEC --out DIR     a job on this machine, no service (cli/run.py, core/)
distill serve                  the embedded service: API + one worker, SQLite, no servers to install
distill api | worker | migrate the parts separately, for the real deployment
distill admin ...              teams, users and API tokens (on the database)
distill login | submit | list | show | metrics | follow | cancel | delete | download | pool ...
                               a running service, over HTTP (cli/jobs.py on cli/remote.py, docs/cli.md)
distill sweep create | list | show | cancel
                               sweeps on a running service (cli/sweeps.py)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import admin as admin_cli
from cli import jobs as jobs_cli
from cli import run as engine
from cli import sweeps as sweeps_cli
from store.settings import Settings, masked_url

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Distillery: knowledge distillation as a service."
)
app.command("run")(engine.run)
app.command("validate")(engine.validate)
app.command("schema")(engine.schema)
app.add_typer(admin_cli.app, name="admin")
app.add_typer(sweeps_cli.app, name="sweep", rich_help_panel="Jobs on a server (client)")
jobs_cli.register(app)

Home = Annotated[
    Path | None, typer.Option(help="Data directory [env DISTILLERY_HOME, default ~/.distillery].")
]


def _settings(home: Path | None) -> Settings:
    """The one settings object: ``DISTILLERY_*`` variables, with ``--home`` over DISTILLERY_HOME."""
    return Settings() if home is None else Settings(home=home)


KEEP_ALIVE_S = 30


MAX_DEFAULT_API_WORKERS = 4  # each process may open 15 database connections (store.db)


def default_api_workers(settings: Settings) -> int:
    """API processes when ``--workers`` is not given: one per CPU, at most four, on PostgreSQL;
    one on SQLite, whose single writer more processes would only queue behind."""
    if settings.db_url.startswith("sqlite"):
        return 1
    return max(1, min(MAX_DEFAULT_API_WORKERS, os.cpu_count() or 1))


def _serve_api(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    # Idle keep-alive connections outlive the clients' own expiry (httpx: 5 s, browsers: longer
    # but they retry): with uvicorn's 5 s default, a client reusing a connection the server had
    # just closed got a dropped request under load.
    # asyncio's own event loop, not uvloop: libuv accepts one connection per turn of the loop
    # (libuv#3696), so while the loop is busy answering, new connections wait in the kernel's
    # queue, a turn each: 50 pollers connecting at once to a saturated embedded API waited up to
    # 0.6-0.8 s for their first answer (p99 3-10x the floor's), the accept queue non-empty for
    # 0.55-0.63 s. asyncio accepts every waiting connection at once: p99 37-69 ms, at the same
    # requests/s within this machine's noise (bench/api_poll.py).
    options: dict[str, Any] = dict(
        host=host, port=port, log_level="info", timeout_keep_alive=KEEP_ALIVE_S, loop="asyncio"
    )
    if workers == 1:
        from api.app import create_served_app

        uvicorn.run(create_served_app(settings), **options)
        return
    # several processes sharing the socket, each building the app from the environment: the
    # home given by --home goes there. Each runs a dispatcher; passes take a database lock
    # (store.locks.DISPATCH), so they never overlap.
    os.environ["DISTILLERY_HOME"] = str(settings.home)
    from cli.serving import serve_processes

    serve_processes("api.app:create_served_app", workers, **options)


def _migrate(settings: Settings) -> None:
    from store.db import migrate

    migrate(settings.db_url)


@app.command()
def migrate(home: Home = None) -> None:
    """Create or upgrade the database schema."""
    settings = _settings(home)
    _migrate(settings)
    typer.echo(f"database ready: {masked_url(settings.db_url)}")


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="API processes [default: one per CPU, at most 4, on PostgreSQL; 1 on SQLite].",
        ),
    ] = None,
    home: Home = None,
) -> None:
    """Run the HTTP API (and the dispatcher that hands queued jobs to the workers)."""
    settings = _settings(home)
    _migrate(settings)
    _token_hint(settings)
    count = workers or default_api_workers(settings)
    if count > 1 and settings.rate_limit_store.startswith("memory"):
        typer.echo(
            f"  warning: {count} API processes count rate limits each on its own (memory storage): "
            "set DISTILLERY_RATE_LIMIT_STORAGE to a Redis URL",
            err=True,
        )
    typer.echo(f"  {count} API process(es)")
    _serve_api(settings, host, port, count)


@app.command()
def worker(
    gpus: Annotated[
        str | None,
        typer.Option(
            help="This host's GPU indices, such as 0,1,2,3: one job slot each (CUDA_VISIBLE_DEVICES)."
        ),
    ] = None,
    gpu: Annotated[str | None, typer.Option(help="One GPU index: the same as --gpus N.")] = None,
    slots: Annotated[
        int | None, typer.Option(help="A machine without GPUs: this many CPU job slots [default 1].")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option(help="Host part of the worker's node name [default: this host].")
    ] = None,
    dispatcher: Annotated[
        bool, typer.Option(help="Also run a dispatcher (when no API process runs one).")
    ] = False,
    home: Home = None,
) -> None:
    """Run a worker host: one process per GPU (or CPU slot) takes the jobs placed on it.

    It runs the jobs of its GPU type (DISTILLERY_GPU_TYPE, default any) and those that take any
    GPU; the scheduler gives each job max(1, resources.gpus) slots of one host.
    """
    from worker.main import start_worker
    from worker.slots import Slots

    if gpus is not None and gpu is not None:
        raise typer.BadParameter("give --gpus or --gpu, not both", param_hint="--gpu")
    try:
        host_slots = Slots.of(gpus or gpu, slots)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    settings = _settings(home)
    _migrate(settings)
    start_worker(settings, host_slots, hostname=hostname, dispatcher=dispatcher)


def _token_hint(settings: Settings) -> None:
    """Every /v1 route needs a token: say how to get the first one."""
    from store.db import session_scope
    from store.identity import any_token

    if settings.admin_token is not None:
        typer.echo("  admin token: the value of DISTILLERY_ADMIN_TOKEN")
        return
    with session_scope(settings.db_url) as session:
        if any_token(session):
            return
    typer.echo(
        "  no API token yet: `distill admin bootstrap` prints an admin token\n"
        "  (or set DISTILLERY_ADMIN_TOKEN before starting); see README, 'Operating the pool'"
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    home: Home = None,
) -> None:
    """The embedded default: API + one worker process, SQLite and a file-based broker under HOME."""
    settings = _settings(home)
    _migrate(settings)
    typer.echo(
        f"Distillery on http://{host}:{port}  (API docs: /docs)\n"
        f"  data: {settings.resolved_home()}\n  database: {masked_url(settings.db_url)}\n"
        f"  broker: {masked_url(settings.broker)}"
    )
    _token_hint(settings)
    # the worker gets the same home by its option: the environment is left as it was
    command = [sys.executable, "-m", "cli.main", "worker", "--home", str(settings.home)]
    worker_proc = subprocess.Popen(command)
    try:
        _serve_api(settings, host, port)
    finally:
        worker_proc.send_signal(signal.SIGTERM)
        try:
            worker_proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker_proc.kill()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
