"""Fresh PostgreSQL databases for tests: made on this machine's server, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from store.db import get_engine, migrate

PG_ADMIN = os.environ.get("DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_postgres(prefix: str) -> Iterator[str]:
    """The URL of a new, empty database (skips the test if PostgreSQL cannot be reached)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def migrated(kind: str, tmp_path: Path, prefix: str) -> Iterator[str]:
    """A migrated, empty database: a SQLite file under ``tmp_path``, or a fresh PostgreSQL one."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / f'{prefix}.db'}"
        migrate(url)
        yield url
        return
    with fresh_postgres(prefix) as url:
        migrate(url)
        yield url


@contextmanager
def statements(db_url: str) -> Iterator[list[str]]:
    """The SQL of every statement this process sends to ``db_url``'s engine meanwhile, in order."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    engine = get_engine(db_url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
