"""How the client commands talk to a server and to the terminal: the connection, exit codes,
error messages, output streams and the options every command shares (docs/cli.md)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from cli import views
from client import (
    ApiError,
    AuthError,
    ChecksumMismatch,
    Client,
    ClientError,
    Config,
    Conflict,
    Invalid,
    Job,
    NotFound,
    Unreachable,
    resolve,
)


class Code(IntEnum):
    OK = 0
    JOB_FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    AUTH = 4
    NOT_FOUND = 5
    INVALID = 6
    CONFLICT = 7
    API_ERROR = 8
    CHECKSUM = 9
    INTERRUPTED = 130


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # logs and pipes: wide enough that ids and tables are not wrapped at rich's default of 80
    width = None if stream.isatty() or "COLUMNS" in os.environ else 140
    return Console(stderr=stderr, width=width)


out = _console(stderr=False)
err = _console(stderr=True)

Url = Annotated[
    str | None,
    typer.Option(
        "--url", help="Server URL (else $DISTILLERY_URL, else `distill login`'s, else http://127.0.0.1:8000)."
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", help="API token (else $DISTILLERY_TOKEN, else the one `distill login` saved for the URL)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON only (stdout), for scripts.")]
JobId = Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No live progress on stderr.")]


# ---------------------------------------------------------------------------- errors


# the most specific class first: AuthError, NotFound, Invalid and Conflict are ApiErrors
EXIT_CODES: tuple[tuple[type[ClientError], Code], ...] = (
    (Unreachable, Code.UNREACHABLE),
    (ChecksumMismatch, Code.CHECKSUM),
    (AuthError, Code.AUTH),
    (NotFound, Code.NOT_FOUND),
    (Invalid, Code.INVALID),
    (Conflict, Code.CONFLICT),
)


def exit_code(error: ClientError) -> Code:
    return next((code for cls, code in EXIT_CODES if isinstance(error, cls)), Code.API_ERROR)


def _auth_hint(error: AuthError, config: Config) -> str:
    if error.status == 403:
        return "not allowed"
    if config.token is None:
        return f"no API token for {config.url}: run `distill login` or set DISTILLERY_TOKEN"
    return f"{config.url} refused the token (from the {config.token_from})"


def _headline(error: ClientError, config: Config) -> str:
    message = error.message
    if isinstance(error, AuthError):
        # without a token the server's "send a token" says less than how to get one
        hint = _auth_hint(error, config)
        return hint if config.token is None and error.status == 401 else f"{hint}: {message}"
    if isinstance(error, Unreachable) and config.url_from != "option":
        return f"{message} (URL from the {config.url_from})"
    if isinstance(error, Invalid) and error.errors:
        # the detail repeats the field list printed below it: keep what comes before
        listed = "; ".join(f"{e.field}: {e.message}" for e in error.errors)
        return message.removesuffix(listed).rstrip(": ") or "invalid input"
    if isinstance(error, ApiError) and not isinstance(error, NotFound | Conflict):
        return f"the server answered {error.status}: {message}"
    return message


def fail(error: ClientError, config: Config) -> NoReturn:
    """One clear line (and the offending fields) on stderr, then the documented exit code."""
    err.print(Text.assemble(("error: ", "bold red"), _headline(error, config)), soft_wrap=True)
    if isinstance(error, ApiError):
        for e in error.errors:
            err.print(Text(f"  {e.field}: {e.message}"), soft_wrap=True)
    raise typer.Exit(exit_code(error))


@contextmanager
def connect(url: str | None, token: str | None) -> Iterator[Client]:
    """A client for the configured server; any ``ClientError`` inside ends the command cleanly."""
    config = resolve(url, token)
    try:
        with Client(config.url, config.token) as client:
            yield client
    except ClientError as e:
        fail(e, config)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(Code.INTERRUPTED) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def print_outcome(job: Job) -> Code:
    """The report of a succeeded job, or what ended it; the exit code for that outcome."""
    if job.status == "succeeded" and job.report is not None:
        views.print_report(out, job.report)
        return Code.OK
    if job.error is not None:
        err.print(f"[bold red]job {job.id} {job.status}[/] ({job.error.type}): {job.error.message}")
    else:
        err.print(f"job {job.id} {views.styled_status(job.status)}")
    return Code.OK if job.status == "succeeded" else Code.JOB_FAILED


def follow_job(client: Client, job_id: str, quiet: bool) -> Job:
    """Poll the job to its end with the live view; Ctrl-C stops following, not the job."""
    try:
        with views.LiveView(err, enabled=not quiet) as view:
            return client.wait(job_id, on_update=view, interval=1.0, metrics=not quiet, events=not quiet)
    except KeyboardInterrupt:
        err.print(
            f"stopped following; job {job_id} goes on (distill follow {job_id} / distill cancel {job_id})"
        )
        raise typer.Exit(Code.INTERRUPTED) from None


# ---------------------------------------------------------------------------- account
