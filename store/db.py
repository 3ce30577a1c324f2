"""Engines, sessions and migrations. Sessions open at the edges (a request, a task)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

MIGRATIONS = Path(__file__).with_name("migrations")
POOL_SIZE = 10  # connections kept open per process: as many requests use the database at once
MAX_OVERFLOW = 5  # and opened beyond them for the rest (the dispatcher's pass, a scrape)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the API) do not block the writer (a worker)
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=QueuePool,
            # all kept open: a new SQLite connection costs its pragmas (WAL, busy timeout)
            pool_size=POOL_SIZE + MAX_OVERFLOW,
            max_overflow=0,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    event.listen(engine, "checkin", _idle_from_now)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


PING_AFTER_IDLE_S = 10.0
"""A pooled connection idle for longer is pinged before it is handed out (a server restarted or a
connection cut while it sat in the pool is replaced, not given to a request)."""


def _idle_from_now(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip per request, a sixth of
    a submission's time on this machine. A connection used within the last ``PING_AFTER_IDLE_S``
    has just answered; one idle longer is pinged, and replaced if it does not answer (raising
    ``DisconnectionError`` makes the pool discard it and check out another, as pre-ping does)."""
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()  # hand it out as it was: outside a transaction
    except Exception as e:
        raise DisconnectionError(f"a pooled connection did not answer: {e}") from e


def pool_capacity(url: str) -> int:
    """How many requests of one process may use the database at once: the connections its pool
    keeps open. (Admitting more, up to the overflow, made the pool open and close a connection
    per request under load: a connection costs more than the 304 it serves.)"""
    pool = get_engine(url).pool
    if not isinstance(pool, QueuePool):
        return 1
    return POOL_SIZE + MAX_OVERFLOW if url.startswith("sqlite") else POOL_SIZE


@lru_cache(maxsize=8)
def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@lru_cache(maxsize=8)
def autocommit_session_factory(url: str) -> sessionmaker[Session]:
    """Sessions on the same pool whose every statement commits on its own: a read sends no
    ``BEGIN`` and no ``COMMIT``. Not for a unit of work that must commit or fail as a whole, nor
    for ``begin_nested`` (no savepoint outside a transaction)."""
    return sessionmaker(
        get_engine(url).execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


ASYNC_POOL_SIZE = 5
"""Connections an API process keeps per event loop for the reads it serves on the loop (beside the
``POOL_SIZE`` of its threads): a read holds one from its first statement to its answer, a
millisecond or two, and gives it back before any work of its goes to a thread, so a few serve
every request one process can answer."""
ASYNC_POOL_TIMEOUT_S = 30.0


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One unit of work: committed when the block ends, rolled back if it raises."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database to the latest schema (the same migrations for SQLite and PostgreSQL)."""
    from alembic import command

    get_engine(url)  # creates the SQLite file's folder
    command.upgrade(alembic_config(url), "head")
