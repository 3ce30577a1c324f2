"""The connection pool: a connection that died while idle in the pool is replaced before a request
gets it (pinged only after ``PING_AFTER_IDLE_S`` idle, not at every checkout), in the threads'
pool and in the event loop's (``db.async_sessions``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from store import db
from tests.databases import PG_ADMIN, fresh_postgres


def backend_pid(url: str) -> int:
    with db.session_scope(url) as session:
        return int(session.scalar(text("SELECT pg_backend_pid()")))


def test_a_connection_killed_while_idle_is_replaced_before_a_request_gets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    psycopg = pytest.importorskip("psycopg")
    with fresh_postgres("distillery_pool") as url:
        first = backend_pid(url)
        assert backend_pid(url) == first  # the same connection, back from the pool at once
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        # idle "long enough": the next checkout pings it, finds it dead and opens another
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
        assert backend_pid(url) != first


def test_the_event_loops_pool_replaces_a_killed_connection_too(monkeypatch: pytest.MonkeyPatch) -> None:
    psycopg = pytest.importorskip("psycopg")

    async def main(url: str) -> tuple[int, int, int]:
        sessions = db.async_sessions(url)
        assert sessions is not None
        try:
            pids = []
            for _ in range(2):
                async with sessions() as session:
                    pids.append(int(await session.scalar(text("SELECT pg_backend_pid()"))))
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
            monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)
            async with sessions() as session:
                after = int(await session.scalar(text("SELECT pg_backend_pid()")))
            return pids[0], pids[1], after
        finally:
            await db.dispose_async(sessions)

    with fresh_postgres("distillery_pool") as url:
        first, again, after = asyncio.run(main(url))
    assert again == first and after != first


def test_sqlite_has_no_event_loop_pool(tmp_path: Path) -> None:
    assert db.async_sessions(f"sqlite:///{tmp_path / 'x.db'}") is None
