"""A fresh database per test, on SQLite and on PostgreSQL (a database made and dropped per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.db import migrate
from tests.databases import fresh_postgres


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        migrate(url)
        yield url
        return
    with fresh_postgres("distillery_store") as url:
        migrate(url)
        yield url
