"""Request dependencies: the application's state and one database session per request (the
caller and the job named in the path are in ``api.auth``).

The session is committed when the route returns and before the response is sent (scope
"function"), so a client never sees a success that was not persisted; routes that must order a
commit before a side effect (submit: commit, then publish) commit themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from anyio import CapacityLimiter, Semaphore, fail_after
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from api.bodies import Bodies
from api.loops import PerLoop
from api.ratelimit import RateLimiter
from api.streams import StreamSlots
from core.errors import UnavailableError
from store.artifacts import ArtifactStore, open_store
from store.db import (
    ASYNC_POOL_TIMEOUT_S,
    autocommit_session_factory,
    pool_capacity,
    session_factory,
)
from store.loop_reads import LoopReads, SqliteLoopReads, close_loop_reads, loop_reads_for
from store.settings import Settings

Publish = Callable[[str, str], None]
"""Sends a job id to the queue of a worker host (job id, worker id); raises when the broker
cannot be reached."""

HOT_THREADS = 4

BrokerCheck = Callable[[], None]
"""Returns when the broker answers; raises otherwise."""


@dataclass
class AppState:
    settings: Settings
    publish: Publish
    check_broker: BrokerCheck
    wake_dispatcher: Callable[[], None] = lambda: None
    """Asks the in-process dispatcher (if any) for a pass now: a new job need not wait a tick."""
    _hot_threads: CapacityLimiter | None = None

    @cached_property
    def artifacts(self) -> ArtifactStore:
        # Lazily: an S3 store imports boto3 and builds a client, which most requests never need.
        return open_store(self.settings.artifacts_location, s3_endpoint=self.settings.s3_endpoint)

    @cached_property
    def streams(self) -> StreamSlots:
        return StreamSlots(self.settings.max_streams_per_token, self.settings.max_streams)

    @cached_property
    def db_url(self) -> str:
        """``settings.db_url``, worked out once: on the embedded deployment it resolves the home
        folder (a file-system call per path component), which a job poll must not do each time."""
        return self.settings.db_url

    @cached_property
    def db_gate(self) -> DatabaseGate:
        return DatabaseGate(pool_capacity(self.settings.db_url))

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.settings.db_url)

    def hot_threads(self) -> CapacityLimiter:
        """The threads the hot reads run on (``api.hot``), made on the event loop that uses them.
        ``HOT_THREADS`` at once: more only fight over the interpreter's lock (at 10, a ``304`` cost
        30% more CPU on a 2-core machine), and a read holds its thread for about a millisecond."""
        if self._hot_threads is None:
            self._hot_threads = CapacityLimiter(HOT_THREADS)
        return self._hot_threads

    @cached_property
    def read_sessions(self) -> sessionmaker[Session]:
        """Sessions whose statements commit one by one (no BEGIN, no COMMIT round trips): for the
        hot reads (``api.hot``), which write nothing but a token's ``last_used_at``."""
        return autocommit_session_factory(self.settings.db_url)

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        return RateLimiter(self.settings)

    @cached_property
    def job_bodies(self) -> Bodies:
        """Jobs' full answers and the list's pages, by ETag (``api.bodies``)."""
        return Bodies(max_bytes=self.settings.answer_cache_bytes)

    @cached_property
    def loop_reads(self) -> PerLoop[LoopReads | SqliteLoopReads | None]:
        """The first query of a request on the event loop, with no ORM (``store.loop_reads``); one
        pool (or SQLite connection) per loop. ``None`` for a database it cannot read."""
        return PerLoop(lambda: loop_reads_for(self.settings.db_url), close_loop_reads)

    async def close_loop_clients(self) -> None:
        """Close the async clients this event loop made (at the end of the application's lifespan
        on it): the engine's connections, the rate limit's Redis connections."""
        await self.loop_reads.aclose()
        await self.rate_limiter.aclose()


def database_busy() -> UnavailableError:
    """A 503 for a request that found no database connection free for as long as it may wait."""
    return UnavailableError(
        "database-busy",
        f"every database connection was busy for {ASYNC_POOL_TIMEOUT_S:.0f} s; retry shortly",
        retry_after_s=1,
    )


async def get_state(request: Request) -> AppState:
    state = request.app.state.distillery
    assert isinstance(state, AppState)
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


GATE_WAIT_S = 30.0
"""How long a request waits for a database connection before it is answered 503."""


class DatabaseGate:
    """Admission to the database: at most as many requests hold a session as the engine's pool
    has connections, and the others wait here, on the event loop, holding no thread.

    Without it, routes and their sync dependencies run on a pool of threads larger than the pool
    of connections: under load every thread can end up blocked waiting for a connection while
    the requests holding the connections wait for a thread to run their route or their commit,
    until the pool's timeout breaks the deadlock with a 500 for each of them.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._semaphore: Semaphore | None = None

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        if self._semaphore is None:  # made on the event loop that uses it
            self._semaphore = Semaphore(self.capacity)
        try:
            with fail_after(GATE_WAIT_S):
                await self._semaphore.acquire()
        except TimeoutError:
            raise UnavailableError(
                "database-busy",
                f"every database connection was busy for {GATE_WAIT_S:.0f} s; retry shortly",
                retry_after_s=1,
            ) from None
        try:
            yield
        finally:
            self._semaphore.release()


async def get_session(state: StateDep) -> AsyncIterator[Session]:
    """One session per request, committed when the route returns, rolled back if it raises.

    The request is admitted by ``state.db_gate`` first (the caller's authentication uses this
    session too), so it finds a free connection whenever its route runs; the commit runs on a
    worker thread like the route itself.
    """
    async with state.db_gate.admit():
        session = state.sessions()
        try:
            yield session
        except BaseException:
            await _end(session, False)
            raise
        await _end(session, True)


async def _end(session: Session, commit: bool) -> None:
    if session.in_transaction():
        await run_in_threadpool(_finish, session, commit)
    else:
        session.close()  # it never reached the database, or committed already: nothing to send


def _finish(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
