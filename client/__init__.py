"""A small typed Python client for the Distillery API (the `distill` CLI's job commands use it).

    from client import Client, resolve

    config = resolve()  # --url/--token, else DISTILLERY_URL/DISTILLERY_TOKEN, else `distill login`'s file
    with Client(config.url, config.token) as api:
        job = api.submit(open("examples/mnist1d.yaml").read())
        job = api.wait(job.id, on_update=lambda u: print(u.job.status, u.job.progress))
        for artifact in api.artifacts(job.id):
            api.download(artifact, "downloads/")  # SHA-256 checked

Errors: ``ClientError`` and below it ``Unreachable``, ``ChecksumMismatch``, ``WaitTimeout`` and
``ApiError`` (``AuthError`` 401/403, ``NotFound`` 404, ``Invalid`` 422, ``Conflict`` 409).
The client renders nothing: the ``distill`` CLI's ``cli.views`` prints its models with rich
(tables, the live progress view); docs/cli.md. A job's ``report`` is the engine's own typed
``Report`` (``core.report_model``, torch-free), re-exported here.
"""

from client._client import Client, parse_spec_text
from client._config import DEFAULT_URL, Config, config_path, forget_login, resolve, save_login
from client._errors import (
    ApiError,
    AuthError,
    ChecksumMismatch,
    ClientError,
    Conflict,
    FieldError,
    Invalid,
    NotFound,
    Problem,
    Unreachable,
    WaitTimeout,
)
from client._models import (
    TERMINAL,
    Artifact,
    Event,
    EventPage,
    Job,
    JobError,
    JobPage,
    JobResult,
    Me,
    Metric,
    MetricPage,
    Placement,
    Pool,
    PoolJob,
    Progress,
    Sweep,
    SweepPage,
    Trial,
    Upload,
    Waiting,
    Worker,
)
from client._wait import Update
from core.report_model import Report

__all__ = [
    "DEFAULT_URL",
    "TERMINAL",
    "ApiError",
    "Artifact",
    "AuthError",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Config",
    "Conflict",
    "Event",
    "EventPage",
    "FieldError",
    "Invalid",
    "Job",
    "JobError",
    "JobPage",
    "JobResult",
    "Me",
    "Metric",
    "MetricPage",
    "NotFound",
    "Placement",
    "Pool",
    "PoolJob",
    "Problem",
    "Progress",
    "Report",
    "Sweep",
    "SweepPage",
    "Trial",
    "Unreachable",
    "Update",
    "Upload",
    "WaitTimeout",
    "Waiting",
    "Worker",
    "config_path",
    "forget_login",
    "parse_spec_text",
    "resolve",
    "save_login",
]
