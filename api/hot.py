"""The hot reads (a job, its ``304``, the jobs list and its ``304``, incremental metrics) in one
trip to a worker thread, and as few round trips to the database as their guarantees allow.

Most routes are plain ``def`` functions with ``def`` dependencies: FastAPI runs each on the thread
pool, one trip per function, and a trip costs about as much as a small query (a plain ``def``
endpoint serves about 60% of the requests an ``async def`` one does). The reads people poll all day
are ``async def`` routes whose dependencies do no I/O (``api.auth.bearer_secret``,
``api.deps.get_state``), and whose whole unit of work runs here in one trip:

1. one query (``store.reads.open_read``): the token's caller (so a revoked token is refused on its
   next request, on every API process), the queue places' serial and, for one job, its head;
2. the token's rate (``api.ratelimit``: one Redis round trip when rate limits are shared);
3. the read itself: nothing more for a ``304`` of a job, the job's row for its full answer.

The session commits statement by statement (``AppState.read_sessions``): a read has nothing to
commit, so it sends no ``BEGIN`` or ``COMMIT``. Routes answer a ``Response`` whose body is already
JSON, so nothing validates it a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from anyio import to_thread
from sqlalchemy.orm import Session

from api.auth import verify
from api.deps import AppState
from store.identity import Caller
from store.jobs import JobHead
from store.reads import open_read

T = TypeVar("T")

ReadSession = Session
"""The session a hot read's work gets (routes name it so, importing no SQLAlchemy)."""


@dataclass(frozen=True)
class Read:
    """What the first query of a hot read found: the caller, the stored places' serial (pass it
    on to ``domain.jobs``: the places are not asked for again), the job named, if any."""

    caller: Caller
    serial: int | None
    head: JobHead | None


async def read(
    state: AppState, secret: str, work: Callable[[Session, Read], T], job_id: str | None = None
) -> T:
    """``work(session, read)`` once the token is verified, on one worker thread, holding one
    database connection (admitted by ``state.db_gate`` first, on the event loop)."""
    async with state.db_gate.admit():
        return await to_thread.run_sync(_unit, state, secret, job_id, work, limiter=state.hot_threads())


def _unit(state: AppState, secret: str, job_id: str | None, work: Callable[[Session, Read], T]) -> T:
    session = state.read_sessions()
    try:
        opened = open_read(session, secret, job_id)
        if opened.token is None:  # unknown or revoked: 401; or the admin token, not made yet
            _first_use(state, secret)
            opened = open_read(session, secret, job_id)
        caller = verify(session, state, secret, opened.token)
        return work(session, Read(caller, opened.serial, opened.head))
    finally:
        session.close()


def _first_use(state: AppState, secret: str) -> None:
    """The usual check in a transaction of its own (making the admin token takes savepoints):
    raises the 401, unless the token is the configured admin token, which it makes."""
    with state.sessions() as session:
        verify(session, state, secret)
        session.commit()
