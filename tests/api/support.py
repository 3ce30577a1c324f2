"""Helpers for the API's tests: specs, unique names, moving jobs through their states."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from store import places
from store.db import session_scope
from store.identity import create_team, create_token, create_user
from store.jobs import transition
from store.models import Job, Team

ADMIN_TOKEN = "dst_test-admin-token"  # DISTILLERY_ADMIN_TOKEN of the tests' apps
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

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


def rank(db_url: str) -> None:
    """What a dispatcher pass leaves behind: every waiting job's place stored (``store.places``)."""
    with session_scope(db_url) as session:
        places.refresh(session)


def job_row(db_url: str, job_id: str) -> Job | None:
    with session_scope(db_url) as session:
        return session.get(Job, job_id)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


@dataclass(frozen=True)
class Member:
    user: str
    team: str
    role: str
    token: str
    token_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_member(db_url: str, *, team: str | None = None, role: str = "member", **limits: Any) -> Member:
    """A user with a token, in ``team`` (made, with ``limits``, unless it exists)."""
    team = team or unique("team")
    user = unique(role)
    with session_scope(db_url) as session:
        if session.get(Team, team) is None:
            create_team(session, team, **limits)
        create_user(session, user, team=team, role=role)
        token, secret = create_token(session, user)
        token_id = token.id
    return Member(user=user, team=team, role=role, token=secret, token_id=token_id)
