"""The connection pool: a connection that died while idle in the pool is replaced before a request
gets it (pinged only after ``PING_AFTER_IDLE_S`` idle, not at every checkout). The event loop's
connections do the same (``tests/store/test_loop_reads.py``)."""

from __future__ import annotations

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
