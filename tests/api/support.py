"""Helpers for the API's tests: specs, unique names, moving jobs through their states."""

from __future__ import annotations

import uuid
from typing import Any

from store.db import session_scope
from store.jobs import transition
from store.models import Job

# A valid spec that would be cheap to run; the API never runs it.
TINY: dict[str, Any] = {
    "data": {"kind": "mnist1d", "train_limit": 300},
    "teacher": {"model": {"kind": "cnn1d", "channels": 8}, "train": {"epochs": 2}},
    "student": {"model": {"kind": "mlp", "hidden": [16]}},
    "distill": {"epochs": 3},
    "export": ["torchscript"],
}

PROBLEM = "application/problem+json"


def unique(prefix: str = "job") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def spec(**changes: Any) -> dict[str, Any]:
    return {**TINY, **changes}


PATH = {
    "starting": ("queued", "retrying"),
    "running": ("starting",),
    "succeeded": ("running",),
    "failed": ("starting", "running"),
    "cancelling": ("starting", "running"),
    "cancelled": ("cancelling", "queued", "retrying"),
    "retrying": ("starting", "running"),
    "queued": ("retrying",),
}


def move(db_url: str, job_id: str, *states: str, **values: Any) -> None:
    """Walk a job through ``states`` as a worker would; ``values`` go with the last step."""
    with session_scope(db_url) as session:
        for i, state in enumerate(states):
            extra = values if i == len(states) - 1 else {}
            assert transition(session, job_id, PATH[state], state, actor="test", **extra), state


def job_row(db_url: str, job_id: str) -> Job | None:
    with session_scope(db_url) as session:
        return session.get(Job, job_id)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body
