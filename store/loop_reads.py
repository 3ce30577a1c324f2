"""The first query of a request (``store.reads``) on the event loop, with no ORM or engine
between: every request's token check and a polled job's head (``api.hot``,
``api.auth.get_caller``), through psycopg's asyncio connections on PostgreSQL (``LoopReads``) and
on the loop itself on a SQLite file (``SqliteLoopReads``).

Why not SQLAlchemy's asyncio engine, which serves the rest of the loop's reads: measured side by
side on this 2-core machine (wrk, 50 connections, one API process, one primary-key ``SELECT`` per
request), an ``async def`` route did 3,500 requests/s with a psycopg connection taken from an
``asyncio.Queue``, 1,300-1,650 through the asyncio engine (an ``AsyncSession`` or a bare
``AsyncConnection``: its greenlet bridge, pool events and result processing) and 2,500 through
``psycopg_pool`` (its waiting clients' timers and locks, when 50 requests share 5 connections).
So the pool here is the smallest that keeps the guarantees: ``size`` connections made on first
need; handed out first come first served (one given back goes to the read that has waited longest:
with an ``asyncio.Queue``, whose free item a newcomer may take first, p99 reached 1.5 s); a wait
longer than ``timeout_s`` is ``LoopPoolTimeout`` (the API's 503 ``database-busy``); a connection
idle for ``PING_AFTER_IDLE_S`` is pinged before it is used, and one that fails is closed and its
place made again on the next need. The statement is ``store.reads``' own, compiled once for
psycopg (and prepared by the server after a few uses, as psycopg does), so both doors read the
same columns.

A connection belongs to the event loop that opened it: one ``LoopReads`` per loop
(``api.loops.PerLoop``), closed at the end of that loop's application (``aclose``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from store.db import ASYNC_POOL_SIZE, ASYNC_POOL_TIMEOUT_S, PING_AFTER_IDLE_S
from store.identity import hash_token
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


class _Statements:
    """``store.reads``' two statements compiled once for a driver (its SQL and the constant
    parameters SQLAlchemy bound), and the parameters of a read."""

    def __init__(self, dialect: Dialect) -> None:
        self._token = self._compiled(TOKEN, dialect)
        self._token_and_job = self._compiled(TOKEN_AND_JOB, dialect)

    @staticmethod
    def _compiled(statement: Any, dialect: Dialect) -> tuple[str, dict[str, Any]]:
        compiled = statement.compile(dialect=dialect)
        return str(compiled), dict(compiled.params)

    def of(self, secret: str, job_id: str | None) -> tuple[str, dict[str, Any]]:
        sql, constants = self._token if job_id is None else self._token_and_job
        params = {**constants, "token_hash": hash_token(secret)}
        if job_id is not None:
            params["job_id"] = job_id
        return sql, params


class _Slot:
    """A place in the pool: a connection (or none yet) and when it was last given back."""

    __slots__ = ("connection", "idle_since")

    def __init__(self) -> None:
        self.connection: psycopg.AsyncConnection[Any] | None = None
        self.idle_since = 0.0


class LoopReads:
    """``open_read`` on the event loop, over at most ``size`` connections of its own."""

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
        row = await self._fetch_one(*self._statements.of(secret, job_id))
        return opening(row, job_id)

    async def _fetch_one(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        slot = await self._take()
        try:
            connection = await self._ready(slot)
            cursor = await connection.execute(sql, params)
            row = await cursor.fetchone()
        except BaseException:
            await self._drop(slot)  # failed or cancelled mid-statement: its state is unknown
            raise
        finally:
            self._give_back(slot)
        return row

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
    """``open_read`` on SQLite, on the event loop itself: a primary-key look-up in a local file
    costs tens of microseconds, less than the trip to a worker thread it saves (the embedded
    deployment's job poll: 0.31x the floor's requests/s through a thread). Its connection never
    waits for a lock (``timeout=0``: in WAL mode a reader waits only while a connection recovers
    the log or truncates it): a busy database is a ``LoopError`` at once, and the read goes the
    thread's way, which waits. Read only (``query_only``), opened on first need."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._statements = _Statements(sqlite.dialect(paramstyle="named"))

    async def open_read(self, secret: str, job_id: str | None = None) -> Opening:
        try:
            row = self._connect().execute(*self._statements.of(secret, job_id)).fetchone()
        except sqlite3.Error:
            await self.aclose()  # opened afresh on the next read
            raise
        if row is not None and row[1] is not None:  # last_used_at, as SQLAlchemy stores it
            row = (row[0], datetime.fromisoformat(row[1]), *row[2:])
        return opening(row, job_id)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            connection.execute("PRAGMA query_only=ON")
            self._connection = connection
        return self._connection

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


async def close_loop_reads(reads: LoopReads | SqliteLoopReads | None) -> None:
    if reads is not None:
        await reads.aclose()
