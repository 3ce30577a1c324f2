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
3. for a page of the list (``read_list``), one more query: the page's keys (``store.jobs``:
   ``(id, status, version, created_at)`` of its jobs, no row loaded);
4. the places of the waiting jobs among them, from this process's copy of the stored places (read
   on a thread once per dispatcher pass that changed them, for the whole process);
5. the route's ``decide(read)`` or ``answer(listing)``: what is cheap and bounded, which answers a
   ``304`` (from versions and places, nothing loaded) or a kept body (``api.bodies``); or it
   returns the rest of the work, ``finish(session)``, for what may load many rows or serialize a
   large answer.

1 to 5 run on the event loop, no thread, no thread switch, no ORM: the queries go through
psycopg's asyncio side on PostgreSQL, and to the file on the loop itself on SQLite
(``store.loop_reads``: tens of microseconds, never waiting for a lock). Measured side by side, a
query sent that way served 2.1-2.7x the requests/s of the same query through SQLAlchemy's asyncio
engine. A page's ``304`` went from about 300 requests/s to 1,100 on SQLite and 720 on PostgreSQL
(one process, wrk with 50 connections) when its queries left that engine (PostgreSQL) and the
worker thread (SQLite) for this way. The rate goes through redis-py's asyncio
client. ``finish`` goes to a worker thread (at most ``HOT_THREADS`` at once), so a large page or a
metric series thinned from 200,000 rows never holds the loop that serves every other request.
An unknown token goes the thread's way (the configured admin token is made there, at its first
use), as does a read whose loop query failed or found SQLite busy (the thread's way waits, and
reports an unreachable database as every route does), and a database the loop cannot read.

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

from api.auth import on_loop, open_on_loop, verify, verify_found
from api.deps import AppState
from domain.jobs import JobFilter, Listing, head_place, list_jobs, listing, page_query
from store.identity import Caller
from store.jobs import JobHead
from store.models import WAITING
from store.places import current, held, place_of, places_in
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


PageAnswer = Callable[[Listing], Answer]
"""A page of the list decided from its keys and places (``read_list``): no session needed."""
Decide = Callable[[Read], Answer]
"""A read of one job decided from its head and its place (``read_job``): no session needed."""


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
        wait = place_of(await _places(state, opened.serial), head)
    answer = decide(Read(caller, opened.serial, head, wait))
    return answer if isinstance(answer, Response) else await _on_thread(state, answer)


async def read_list(
    state: AppState, secret: str, wanted: JobFilter, limit: int, answer: PageAnswer
) -> Response:
    """``answer(listing)`` for a page of the jobs list: the token, the page's keys and (for a page
    with waiting jobs) their places on the event loop (``store.loop_reads``: two queries, no
    session, the places from this process's copy), so a ``304`` or a kept page needs no thread;
    a ``Finish`` (the page's rows) goes to one."""
    opened = await open_on_loop(state, secret)
    if opened is None or opened.token is None:  # another database, an unknown token, a failed read
        return await _on_thread(
            state, lambda session: _unit(state, session, secret, None, _page(wanted, limit, answer))
        )
    caller = await verify_found(state, opened.token)
    query, serial = page_query(caller, wanted), opened.serial
    keys = await on_loop(state, lambda reads: reads.job_keys(query, limit + 1))
    if keys is None:  # SQLite found busy, or a failed read: the thread's way waits and reports
        return await _on_thread(
            state,
            lambda session: _answered(session, answer(list_jobs(session, caller, wanted, limit, serial))),
        )
    waiting = any(key.status in WAITING for key in keys[:limit])
    places = await _places(state, serial) if waiting else {}
    reply = answer(listing(keys, limit, lambda page: places_in(places, page)))
    return reply if isinstance(reply, Response) else await _on_thread(state, reply)


async def _places(state: AppState, serial: int | None) -> dict[str, Wait]:
    """The stored places of ``serial``: this process's copy, read on a worker thread only when a
    dispatcher pass has stored new ones since this process last read them (once for them all)."""
    places = held(state.db_url, serial)
    return places if places is not None else await _on_thread(state, lambda session: current(session, serial))


def _page(wanted: JobFilter, limit: int, answer: PageAnswer) -> Work:
    return lambda session, read: answer(list_jobs(session, read.caller, wanted, limit, read.serial))


def _answered(session: Session, answer: Answer) -> Response:
    return answer if isinstance(answer, Response) else answer(session)


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
    return _answered(session, work(session, Read(caller, opened.serial, opened.head)))


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
