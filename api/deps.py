"""Request dependencies: the application's state, one database session per request, the job
named in the path, and the caller.

The session is committed when the route returns and before the response is sent (scope
"function"), so a client never sees a success that was not persisted; routes that must order a
commit before a side effect (submit: commit, then publish) commit themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from api.problems import not_found
from store.artifacts import ArtifactStore, open_store
from store.db import session_scope
from store.models import Job
from store.settings import Settings

Publish = Callable[[str, str], None]
"""Sends a job id to a queue; raises when the broker cannot be reached."""

BrokerCheck = Callable[[], None]
"""Returns when the broker answers; raises otherwise."""


@dataclass
class AppState:
    settings: Settings
    publish: Publish
    check_broker: BrokerCheck

    @cached_property
    def artifacts(self) -> ArtifactStore:
        # Lazily: an S3 store imports boto3 and builds a client, which most requests never need.
        return open_store(self.settings.artifacts_location)


def get_state(request: Request) -> AppState:
    state = request.app.state.distillery
    assert isinstance(state, AppState)
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(state: StateDep) -> Iterator[Session]:
    """One session per request, committed when the route returns, rolled back if it raises."""
    with session_scope(state.settings.db_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_owner() -> str:
    """The caller. Authentication is not built yet: everyone is "anonymous"."""
    return "anonymous"


OwnerDep = Annotated[str, Depends(get_owner)]


def get_job(job_id: Annotated[str, Path(max_length=64)], session: SessionDep) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


JobDep = Annotated[Job, Depends(get_job)]
