"""``distill`` commands that talk to a running service through the ``client`` package.

    distill login                     save the server URL and your token (GET /v1/me checks them)
    distill submit SPEC --wait        submit a spec and follow it live to its report
    distill list | show | metrics | follow | cancel | delete | download | upload-model | pool

Results go to stdout (``--json``: JSON only, for scripts), progress and errors to stderr. Exit
codes (docs/cli.md): 0 ok, 1 the job failed or was cancelled, 2 usage, 3 server unreachable,
4 not authenticated or not allowed, 5 not found, 6 invalid input, 7 conflict, 8 other API error,
9 a download failed its checksum, 130 interrupted.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cli import views
from cli.remote import (
    AsJson,
    Code,
    JobId,
    Quiet,
    Token,
    Url,
    connect,
    dump,
    err,
    fail,
    follow_job,
    out,
    print_json,
    print_outcome,
)
from client import (
    Artifact,
    Client,
    ClientError,
    Config,
    Job,
    NotFound,
    Upload,
    forget_login,
    parse_spec_text,
    resolve,
    save_login,
)


def _read_token(token: str | None) -> str:
    """``--token``, else a hidden prompt on a terminal, else the first line of stdin (scripts)."""
    if token:
        return token
    if sys.stdin.isatty():
        return str(typer.prompt("API token", hide_input=True)).strip()
    return sys.stdin.readline().strip()


def login(url: Url = None, token: Token = None) -> None:
    """Check a token against the server (GET /v1/me) and save both in the config file (mode 0600).

    Without --token, the token is asked for (hidden), or read from stdin when it is not a terminal."""
    config = resolve(url, None)
    secret = _read_token(token)
    if not secret:
        err.print("[bold red]error:[/] no token given")
        raise typer.Exit(Code.USAGE)
    checked = Config(config.url, secret, config.url_from, "option", config.path)
    try:
        with Client(config.url, secret) as client:
            me = client.me()
    except ClientError as e:
        fail(e, checked)
    save_login(config.url, secret, config.path)
    out.print(f"logged in to {config.url} as {me.user} (team {me.team}, {me.role})", highlight=False)
    err.print(f"token saved in {config.path}", highlight=False)
    if config.token_from == "environment":
        err.print("note: DISTILLERY_TOKEN is set and takes precedence over the saved token")


def logout(url: Url = None) -> None:
    """Forget the token saved for the server (the token itself stays valid: revoke it on the server)."""
    config = resolve(url, None)
    if forget_login(config.url, config.path):
        out.print(f"forgot the token for {config.url} ({config.path})", highlight=False)
    else:
        out.print(f"no token saved for {config.url}", highlight=False)


def whoami(url: Url = None, token: Token = None, as_json: AsJson = False) -> None:
    """Who the token stands for, on which server, and where both were found."""
    config = resolve(url, token)
    with connect(url, token) as client:
        me = client.me()
    if as_json:
        print_json({**dump(me), "url": config.url, "token_from": config.token_from})
        return
    out.print(f"{me.user} (team {me.team}, {me.role}) on {config.url}", highlight=False)
    err.print(f"URL from the {config.url_from}, token from the {config.token_from}", highlight=False)


# ---------------------------------------------------------------------------- jobs


def _load_spec(source: str) -> dict[str, Any]:
    if source == "-":
        return parse_spec_text(sys.stdin.read())
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as e:
        raise typer.BadParameter(f"cannot read {source}: {e.strerror or e}", param_hint="SPEC") from None
    return parse_spec_text(text)


def submit(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="Job spec, YAML or JSON; - reads stdin.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Follow the job live to its report.")] = False,
    name: Annotated[str | None, typer.Option(help="Use this job name instead of the spec's.")] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Submit a job spec. With --wait: live progress, then the report; exit 1 if the job fails."""
    with connect(url, token) as client:
        body = _load_spec(spec)
        if name is not None:
            body["name"] = name
        # a retry of this very submission (e.g. by a wrapper) must not make a second job
        job = client.submit(body, idempotency_key=uuid.uuid4().hex)
        if not quiet:
            err.print(f"submitted job {job.id} ({job.name}): {_where(job)}", highlight=False)
        if not wait:
            if as_json:
                print_json(dump(job))
            else:
                out.print(job.id, highlight=False)
            return
        job = follow_job(client, job.id, quiet or as_json)
    _finish(job, as_json)


def _where(job: Job) -> str:
    if job.waiting is not None:
        return f"{job.status}, {job.waiting.place} on {job.queue}: {job.waiting.message}"
    return job.status


def _finish(job: Job, as_json: bool) -> None:
    if as_json:
        print_json(dump(job))
        code = Code.OK if job.status == "succeeded" else Code.JOB_FAILED
    else:
        code = print_outcome(job)
    raise typer.Exit(code)


def follow(
    job_id: JobId, quiet: Quiet = False, as_json: AsJson = False, url: Url = None, token: Token = None
) -> None:
    """Follow a job live (progress, events) to its end, then print its report; exit 1 if it fails."""
    with connect(url, token) as client:
        job = follow_job(client, job_id, quiet or as_json)
    _finish(job, as_json)


def list_jobs(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Only jobs in this state (repeatable).")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Only this user's jobs.")] = None,
    name: Annotated[str | None, typer.Option(help="Name contains this (case-insensitive).")] = None,
    sweep: Annotated[str | None, typer.Option(help="Only this sweep's trials.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs, newest first.")] = 50,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Your team's jobs, newest first."""
    with connect(url, token) as client:
        jobs = []
        for job in client.iter_jobs(
            page_size=min(limit, 200), status=status, owner=owner, name=name, sweep=sweep
        ):
            jobs.append(job)
            if len(jobs) >= limit:
                break
    if as_json:
        print_json([dump(j) for j in jobs])
        return
    out.print(views.job_table(jobs))


def show(job_id: JobId, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """A job: its state, why it waits, progress, error, report and artifacts."""
    with connect(url, token) as client:
        job = client.get_job(job_id)
        artifacts = client.artifacts(job_id) if job.status == "succeeded" and not as_json else []
    if as_json:
        print_json(dump(job))
        return
    out.print(views.job_details(job))
    if job.report is not None:
        views.print_report(out, job.report)
    if artifacts:
        out.print(views.artifact_table(artifacts, None))


def metrics(
    job_id: JobId,
    stage: Annotated[
        str | None, typer.Option(help="Only this stage: teacher, baseline, student, ...")
    ] = None,
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Only this metric (repeatable).")
    ] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """A job's metrics: per stage, one row per epoch and one column per metric (--json: the rows)."""
    with connect(url, token) as client:
        rows = client.all_metrics(job_id, stage=stage, name=name)
    if as_json:
        print_json([dump(m) for m in rows])
        return
    if not rows:
        err.print(f"job {job_id} has no metrics yet")
    for table in views.metric_tables(rows):
        out.print(table)


def cancel(job_id: JobId, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Cancel a job: a waiting one at once, a running one within seconds (exit 7 if it has ended)."""
    with connect(url, token) as client:
        job = client.cancel(job_id)
    if as_json:
        print_json(dump(job))
    elif job.status == "cancelling":
        out.print(f"job {job.id} cancelling: its worker stops it within seconds", highlight=False)
    else:
        out.print(f"job {job.id} {job.status}", highlight=False)


def delete(
    job_id: JobId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Delete a finished job's metrics and artifacts (exit 7 while it is live: cancel it first)."""
    if not yes:
        if not sys.stdin.isatty():
            err.print("[bold red]error:[/] not a terminal to confirm on: pass --yes")
            raise typer.Exit(Code.USAGE)
        if not typer.confirm(f"delete job {job_id}, its metrics and its artifacts?"):
            err.print("nothing deleted")
            return
    with connect(url, token) as client:
        client.delete(job_id)
    out.print(f"job {job_id} deleted", highlight=False)


# ---------------------------------------------------------------------------- files


def download(
    job_id: JobId,
    artifact: Annotated[
        list[str] | None,
        typer.Option("--artifact", "-a", help="An artifact name (repeatable); default: the student files."),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to write to.")] = Path("."),
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Download a job's artifacts, each checked against its SHA-256 (exit 9 on a mismatch)."""
    with connect(url, token) as client:
        chosen = _choose(client.artifacts(job_id), artifact, job_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {a.id: client.download(a, out_dir) for a in chosen}
    if as_json:
        print_json([{**dump(a), "path": str(paths[a.id])} for a in chosen])
    else:
        out.print(views.artifact_table(chosen, paths))


def _choose(available: list[Artifact], wanted: list[str] | None, job_id: str) -> list[Artifact]:
    by_name = {a.name: a for a in available}
    if not wanted:
        chosen = [a for a in available if a.name.startswith("student")]
        if not chosen:
            raise NotFound(404, f"job {job_id} has no student artifacts (has it succeeded?)")
        return chosen
    missing = [n for n in wanted if n not in by_name]
    if missing:
        known = ", ".join(by_name) or "none"
        raise NotFound(404, f"job {job_id} has no artifact {', '.join(missing)} (it has: {known})")
    return [by_name[n] for n in wanted]


UploadFile = Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False, readable=True)]


def upload_model(
    file: UploadFile,
    format_: Annotated[
        str | None, typer.Option("--format", help="torchscript or safetensors (default: guessed).")
    ] = None,
    architecture: Annotated[
        str | None,
        typer.Option(help='safetensors only: the registry model as JSON, e.g. \'{"kind": "cnn1d"}\'.'),
    ] = None,
    as_json: AsJson = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Upload a teacher model; prints the spec fragment that uses it."""
    with connect(url, token) as client:
        upload = client.upload_model(file, format=format_, architecture=architecture)
    _print_upload(upload, as_json)


def upload_dataset(file: UploadFile, as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """Upload an .npz dataset (x_train, y_train, x_test, y_test); prints the spec fragment."""
    with connect(url, token) as client:
        upload = client.upload_dataset(file)
    _print_upload(upload, as_json)


def _print_upload(upload: Upload, as_json: bool) -> None:
    if as_json:
        print_json(dump(upload))
        return
    out.print(f"uploaded {upload.filename} as {upload.kind} {upload.id}: {upload.path}", highlight=False)
    out.print("use it in a job spec:", highlight=False)
    out.print(yaml.safe_dump(upload.spec_fragment, sort_keys=False).rstrip(), highlight=False, markup=False)


# ---------------------------------------------------------------------------- pool


def pool(as_json: AsJson = False, url: Url = None, token: Token = None) -> None:
    """The GPU pool: workers, their devices and jobs, and the queue of each team and GPU type."""
    with connect(url, token) as client:
        view = client.pool()
    if as_json:
        print_json(dump(view))
        return
    for renderable in views.pool_views(view):
        out.print(renderable)


COMMANDS: dict[str, Callable[..., None]] = {
    "login": login,
    "logout": logout,
    "whoami": whoami,
    "submit": submit,
    "list": list_jobs,
    "show": show,
    "follow": follow,
    "metrics": metrics,
    "cancel": cancel,
    "delete": delete,
    "download": download,
    "upload-model": upload_model,
    "upload-dataset": upload_dataset,
    "pool": pool,
}


def register(app: typer.Typer) -> None:
    """Add the client commands to ``distill``."""
    for command, function in COMMANDS.items():
        app.command(command, rich_help_panel="Jobs on a server (client)")(function)
