"""The hot reads (a job, its ``304``, the jobs list and its ``304``, incremental metrics): on the
event loop where the database allows (below), else in one trip to a worker thread; as few round
trips to the database as their guarantees allow.

Most routes are plain ``def`` functions with ``def`` dependencies: FastAPI runs each on the thread
pool, one trip per function, and a trip costs about as much as a small query (a plain ``def``
endpoint serves about 60% of the requests an ``async def`` one does). The reads people poll all day
are ``async def`` routes whose dependencies do no I/O (``api.auth.bearer_secret``,
``api.deps.get_state``). A read is:

1. one query (``store.reads.open_read``): the token's caller (so a revoked token is refused on its
   next request, on every API process), the queue places' serial and, for one job, its head;
2. the token's rate (``api.ratelimit``: one Redis round trip when rate limits are shared);
3. the route's ``work(session, read)``: what is cheap and bounded, which answers a ``304`` (from
   a version and a place, nothing loaded) or a cached body; or it returns the rest of the work,
   ``finish(session)``, for what may load many rows or serialize a large answer.

On PostgreSQL, 1 to 3 run on the event loop, no thread, no thread switch. A read of one job
(``read_job``: the job, its ``304``, its metrics) sends its query through psycopg's asyncio side
with no ORM (``store.loop_reads``: 2.1-2.7x the requests/s of the same query through
SQLAlchemy's asyncio engine, measured side by side), its place comes from this process's copy of the stored
places (read on a thread once per dispatcher pass that changed them), and its ``decide(read)``
needs no session at all. The list (``read``) sends its first query and its page's keys through
SQLAlchemy's asyncio engine, the route's synchronous code in its greenlet
(``AsyncSession.run_sync``). The rate goes through redis-py's asyncio client. ``finish`` goes to
a worker thread (at most ``HOT_THREADS`` at once), so a large page or a metric series thinned
from 200,000 rows never holds the loop that serves every other request. On SQLite, a read of one
job queries the file on the loop itself (``store.loop_reads.SqliteLoopReads``: tens of
microseconds, never waiting for a lock) and the list's 1 to 3 and ``finish`` run in one trip to a
worker thread. An unknown token goes the thread's way too (the configured admin token is made
there, at its first use), as does a read whose loop query failed (the thread's way reports an
unreachable database as every route does).

The sessions commit statement by statement (autocommit): a read has nothing to commit, so it sends
no ``BEGIN`` or ``COMMIT``. Routes answer a ``Response`` whose body is already JSON, so nothing
validates it a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from anyio import to_thread
from fastapi import Response
from sqlalchemy.orm import Session

from api.auth import open_on_loop, verify, verify_found
from api.deps import AppState
from domain.jobs import head_place
from store.identity import Caller
from store.jobs import JobHead
from store.models import WAITING
from store.places import current, held, place_of
from store.reads import open_read
from store.scheduler import Wait

ReadSession = Session
"""The session a hot read's work gets (routes name it so, importing no SQLAlchemy)."""

Finish = Callable[[Session], Response]
"""The rest of a read's work, for a worker thread: it may load many rows or build a large body."""
Answer = Response | Finish
Work = Callable[[Session, "Read"], Answer]
T = TypeVar("T")


@dataclass(frozen=True)
class Read:
    """What the first query of a hot read found: the caller, the stored places' serial (pass it
    on to ``domain.jobs``: the places are not asked for again), the job named, if any, and (for
    ``read_job``) where that job waits in its queue."""

    caller: Caller
    serial: int | None
    head: JobHead | None
    wait: Wait | None = None


Decide = Callable[[Read], Answer]
"""A read of one job decided from its head and its place (``read_job``): no session needed."""


async def read(state: AppState, secret: str, work: Work, job_id: str | None = None) -> Response:
    """``work(session, read)`` once the token is verified (and its ``Finish``, if it returns one)."""
    finish: Finish | None = None
    async with state.loop_session() as session:
        if session is not None:
            opened = await session.run_sync(open_read, secret, job_id)
            if opened.token is not None:
                caller = await verify_found(state, opened.token, session)
                answer = await session.run_sync(work, Read(caller, opened.serial, opened.head))
                if isinstance(answer, Response):
                    return answer
                finish = answer
    if finish is not None:  # the loop's connection is back in its pool by now
        return await _on_thread(state, finish)
    # SQLite; or an unknown token, which the thread's way answers 401 or makes the admin token
    return await _on_thread(state, lambda session: _unit(state, session, secret, job_id, work))


async def read_job(state: AppState, secret: str, job_id: str, decide: Decide) -> Response:
    """``decide(read)`` for a read of one job, ``read.wait`` its place; all on the event loop
    (``store.loop_reads``: one query, no session), the places read on a worker thread
    only when a dispatcher pass has stored new ones since this process last read them."""
    opened = await open_on_loop(state, secret, job_id)
    if opened is None or opened.token is None:  # SQLite, an unknown token, or a failed read
        return await _on_thread(state, lambda session: _unit_job(state, session, secret, job_id, decide))
    caller = await verify_found(state, opened.token)
    wait = None
    if (head := opened.head) is not None and head.status in WAITING:
        places = held(state.db_url, opened.serial)
        if places is None:  # a pass stored new places: read them once for the whole process
            places = await _on_thread(state, lambda session: current(session, opened.serial))
        wait = place_of(places, head)
    answer = decide(Read(caller, opened.serial, head, wait))
    return answer if isinstance(answer, Response) else await _on_thread(state, answer)


async def _on_thread(state: AppState, run: Callable[[Session], T]) -> T:
    """``run`` with a session of its own, on a worker thread, holding one database connection
    (admitted by ``state.db_gate`` first, on the event loop)."""
    async with state.db_gate.admit():
        return await to_thread.run_sync(_with_session, state, run, limiter=state.hot_threads())


def _with_session(state: AppState, run: Callable[[Session], T]) -> T:
    session = state.read_sessions()
    try:
        return run(session)
    finally:
        session.close()


def _unit(state: AppState, session: Session, secret: str, job_id: str | None, work: Work) -> Response:
    opened = open_read(session, secret, job_id)
    if opened.token is None:  # unknown or revoked: 401; or the admin token, not made yet
        _first_use(state, secret)
        opened = open_read(session, secret, job_id)
    caller = verify(session, state, secret, opened.token)
    answer = work(session, Read(caller, opened.serial, opened.head))
    return answer if isinstance(answer, Response) else answer(session)


def _unit_job(state: AppState, session: Session, secret: str, job_id: str, decide: Decide) -> Response:
    def work(session: Session, read: Read) -> Answer:
        wait = None if read.head is None else head_place(session, read.head, read.serial)
        return decide(Read(read.caller, read.serial, read.head, wait))

    return _unit(state, session, secret, job_id, work)


def _first_use(state: AppState, secret: str) -> None:
    """The usual check in a transaction of its own (making the admin token takes savepoints):
    raises the 401, unless the token is the configured admin token, which it makes."""
    with state.sessions() as session:
        verify(session, state, secret)
        session.commit()
