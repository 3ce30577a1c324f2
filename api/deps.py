"""Request dependencies: the application's state and one database session per request (the
caller and the job named in the path are in ``api.auth``).

The session is committed when the route returns and before the response is sent (scope
"function"), so a client never sees a success that was not persisted; routes that must order a
commit before a side effect (submit: commit, then publish) commit themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from api.auth import RateLimiter
from store.artifacts import ArtifactStore, open_store
from store.db import session_scope
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
    wake_dispatcher: Callable[[], None] = lambda: None
    """Asks the in-process dispatcher (if any) for a pass now: a new job need not wait a tick."""

    @cached_property
    def artifacts(self) -> ArtifactStore:
        # Lazily: an S3 store imports boto3 and builds a client, which most requests never need.
        return open_store(self.settings.artifacts_location)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        from api.auth import RateLimiter

        return RateLimiter(self.settings)


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
