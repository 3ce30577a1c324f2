"""The queries of the hot reads on the event loop, with no ORM or engine between: every request's
token check, a polled job's head and a list page's keys (``api.hot``, ``api.auth.get_caller``),
through psycopg's asyncio connections on PostgreSQL (``LoopReads``) and on the loop itself on a
SQLite file (``SqliteLoopReads``).

Why not SQLAlchemy's asyncio engine: measured side by side on this 2-core machine (wrk, 50
connections, one API process, one primary-key ``SELECT`` per request), an ``async def`` route did
3,500 requests/s with a psycopg connection taken from an ``asyncio.Queue``, 1,300-1,650 through
the asyncio engine (an ``AsyncSession`` or a bare ``AsyncConnection``: its greenlet bridge, pool
events and result processing) and 2,500 through ``psycopg_pool`` (its waiting clients' timers and
locks, when 50 requests share 5 connections).
So the pool here is the smallest that keeps the guarantees: ``size`` connections made on first
need; handed out first come first served (one given back goes to the read that has waited longest:
with an ``asyncio.Queue``, whose free item a newcomer may take first, p99 reached 1.5 s); a wait
longer than ``timeout_s`` is ``LoopPoolTimeout`` (the API's 503 ``database-busy``); a connection
idle for ``PING_AFTER_IDLE_S`` is pinged before it is used, and one that fails is closed and its
place made again on the next need. The statements are ``store.reads``' and ``store.jobs``' own,
compiled once for the driver (and prepared by the server after a few uses, as psycopg does), their
values converted by their columns' types (``_Compiled``), so both doors read the same rows.

A connection belongs to the event loop that opened it: one ``LoopReads`` per loop
(``api.loops.PerLoop``), closed at the end of that loop's application (``aclose``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from store.db import ASYNC_POOL_SIZE, ASYNC_POOL_TIMEOUT_S, PING_AFTER_IDLE_S
from store.identity import hash_token
from store.jobs import JobKeyRow, JobQuery, KeysShape, keys_request, keys_statement
from store.reads import TOKEN, TOKEN_AND_JOB, Opening, opening

LoopError = (psycopg.Error, sqlite3.Error)
"""What a read here raises when the database fails it (or, on SQLite, is busy): the caller goes
the usual way instead, which waits for a lock and reports an unreachable database as every route
does (503)."""


class LoopPoolTimeout(Exception):
    """No connection came free within the pool's timeout."""


def loop_reads_for(url: str) -> LoopReads | SqliteLoopReads | None:
    """For PostgreSQL through psycopg, or a SQLite file; ``None`` for any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        return LoopReads(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return SqliteLoopReads(str(parsed.database))
    return None


class _Compiled:
    """A statement compiled once for a driver: its SQL, the constant parameters SQLAlchemy bound,
    and its types' conversions, so a row reads as the session's would (on SQLite: a stored
    ``DateTime``'s text to a ``datetime``, a status to its ``JobStatus``)."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._constants = dict(compiled.params)
        binds = {name: bind.type.dialect_impl(dialect) for bind, name in compiled.bind_names.items()}
        processors = {name: impl.bind_processor(dialect) for name, impl in binds.items()}
        self._binds = {name: process for name, process in processors.items() if process is not None}
        self._results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ]

    def params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        params = {**self._constants, **given}
        for key, process in self._binds.items():
            if params.get(key) is not None:
                params[key] = process(params[key])
        return params

    def row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            value if process is None or value is None else process(value)
            for process, value in zip(self._results, row, strict=True)
        )


class _Statements:
    """``store.reads``' two statements and the list's (``store.jobs.keys_statement``, one per
    shape) compiled once for a driver."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._token = _Compiled(TOKEN, dialect)
        self._token_and_job = _Compiled(TOKEN_AND_JOB, dialect)
        self._keys: dict[KeysShape, _Compiled] = {}

    def opening(self, secret: str, job_id: str | None) -> tuple[_Compiled, dict[str, Any]]:
        statement = self._token if job_id is None else self._token_and_job
        given = {"token_hash": hash_token(secret)}
        if job_id is not None:
            given["job_id"] = job_id
        return statement, statement.params(given)

    def keys(self, query: JobQuery, limit: int) -> tuple[_Compiled, dict[str, Any]]:
        shape, given = keys_request(query, limit)
        if (statement := self._keys.get(shape)) is None:
            statement = self._keys[shape] = _Compiled(keys_statement(shape), self._dialect)
        return statement, statement.params(given)


class _Slot:
    """A place in the pool: a connection (or none yet) and when it was last given back."""

    __slots__ = ("connection", "idle_since")

    def __init__(self) -> None:
        self.connection: psycopg.AsyncConnection[Any] | None = None
        self.idle_since = 0.0


class LoopReads:
    """``open_read`` and ``job_keys`` on the event loop, over at most ``size`` connections of its own."""

    def __init__(
        self, url: str, size: int = ASYNC_POOL_SIZE, timeout_s: float = ASYNC_POOL_TIMEOUT_S
    ) -> None:
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.timeout_s = timeout_s
        self._all = [_Slot() for _ in range(size)]
        self._free = list(self._all)
        self._waiting: deque[asyncio.Future[_Slot]] = deque()
        self._statements = _Statements(postgresql.psycopg.dialect())  # named %(...)s parameters

    async def open_read(self, secret: str, job_id: str | None = None) -> Opening:
        """``store.reads.open_read``: the token's caller, the places' serial, the job's head."""
        rows = await self._fetch(*self._statements.opening(secret, job_id))
        return opening(rows[0] if rows else None, job_id)

    async def job_keys(self, query: JobQuery, limit: int) -> list[JobKeyRow]:
        """``store.jobs.job_keys``: a page's keys, newest first."""
        return [JobKeyRow._make(row) for row in await self._fetch(*self._statements.keys(query, limit))]

    async def _fetch(self, statement: _Compiled, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        slot = await self._take()
        try:
            connection = await self._ready(slot)
            cursor = await connection.execute(statement.sql, params)
            rows = await cursor.fetchall()
        except BaseException:
            await self._drop(slot)  # failed or cancelled mid-statement: its state is unknown
            raise
        finally:
            self._give_back(slot)
        return [statement.row(row) for row in rows]

    async def _take(self) -> _Slot:
        """A free place, first come first served: one given back goes to the longest waiting
        read, never to one that arrives meanwhile (which would leave a waiter starving: with
        ``asyncio.Queue`` a read that lost the race went to the back, and p99 reached seconds)."""
        if self._free and not self._waiting:
            return self._free.pop()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Slot] = loop.create_future()
        self._waiting.append(waiter)
        expiry = loop.call_later(self.timeout_s, self._expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a place, then cancelled
                self._give_back(waiter.result())
            raise
        finally:
            expiry.cancel()

    def _expire(self, waiter: asyncio.Future[_Slot]) -> None:
        if not waiter.done():
            waiter.set_exception(LoopPoolTimeout(f"no connection came free in {self.timeout_s:.0f} s"))

    def _give_back(self, slot: _Slot) -> None:
        slot.idle_since = time.monotonic()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # not timed out nor cancelled
                waiter.set_result(slot)
                return
        self._free.append(slot)

    async def _ready(self, slot: _Slot) -> psycopg.AsyncConnection[Any]:
        connection = slot.connection
        if connection is not None and (connection.closed or connection.broken):
            connection = slot.connection = None
        if connection is not None and time.monotonic() - slot.idle_since > PING_AFTER_IDLE_S:
            try:  # idle a while: the server may have restarted, or the connection been cut
                await connection.execute("SELECT 1")
            except psycopg.Error:
                await self._drop(slot)
                connection = None
        if connection is None:
            connection = slot.connection = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        return connection

    @staticmethod
    async def _drop(slot: _Slot) -> None:
        connection, slot.connection = slot.connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                await connection.close()

    async def aclose(self) -> None:
        for slot in self._all:
            await self._drop(slot)


class SqliteLoopReads:
    """``open_read`` and ``job_keys`` on SQLite, on the event loop itself: an indexed look-up in a
    local file costs tens of microseconds, less than the trip to a worker thread it saves (the
    embedded deployment's job poll: 0.31x the floor's requests/s through a thread). Its connection never
    waits for a lock (``timeout=0``: in WAL mode a reader waits only while a connection recovers
    the log or truncates it): a busy database is a ``LoopError`` at once, and the read goes the
    thread's way, which waits. Read only (``query_only``), opened on first need."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._statements = _Statements(sqlite.dialect(paramstyle="named"))

    async def open_read(self, secret: str, job_id: str | None = None) -> Opening:
        rows = self._fetch(*self._statements.opening(secret, job_id))
        return opening(rows[0] if rows else None, job_id)

    async def job_keys(self, query: JobQuery, limit: int) -> list[JobKeyRow]:
        return [JobKeyRow._make(row) for row in self._fetch(*self._statements.keys(query, limit))]

    def _fetch(self, statement: _Compiled, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        try:
            rows = self._connect().execute(statement.sql, params).fetchall()
        except sqlite3.Error:
            self._close()  # opened afresh on the next read
            raise
        return [statement.row(row) for row in rows]

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            connection.execute("PRAGMA query_only=ON")
            self._connection = connection
        return self._connection

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def aclose(self) -> None:
        self._close()


async def close_loop_reads(reads: LoopReads | SqliteLoopReads | None) -> None:
    if reads is not None:
        await reads.aclose()
