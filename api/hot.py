"""The hot reads (a job, its ``304``, the jobs list and its ``304``, incremental metrics) in one
trip to a worker thread.

Most routes are plain ``def`` functions with ``def`` dependencies: FastAPI runs each on the thread
pool, one trip per function, and a trip costs about as much as a small query (a plain ``def``
endpoint serves about 60% of the requests an ``async def`` one does). The reads people poll all day
are ``async def`` routes whose dependencies do no I/O (``api.auth.bearer_secret``,
``api.deps.get_state``), and whose whole unit of work runs here in one trip: the token checked in
the database (so a revoked token is refused on its next request, on every API process) and
against its rate, the read, the end of the transaction. They answer a ``Response`` whose body is
already JSON, so nothing validates it a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.auth import verify
from api.deps import AppState
from store.identity import Caller

T = TypeVar("T")

ReadSession = Session
"""The session a hot read's work gets (routes name it so, importing no SQLAlchemy)."""


async def read(state: AppState, secret: str, work: Callable[[Session, Caller], T]) -> T:
    """``work(session, caller)`` after the token is verified, on one worker thread, holding one
    database connection (admitted by ``state.db_gate`` first, on the event loop)."""
    async with state.db_gate.admit():
        return await run_in_threadpool(_unit, state, secret, work)


def _unit(state: AppState, secret: str, work: Callable[[Session, Caller], T]) -> T:
    session = state.sessions()
    try:
        result = work(session, verify(session, state, secret))
        session.commit()  # a read: ends the transaction (and returns the connection) at once
        return result
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
