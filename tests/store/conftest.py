"""A fresh database per test, on SQLite and on PostgreSQL (a database made and dropped per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.databases import migrated


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with migrated(request.param, tmp_path, "distillery_store") as url:
        yield url
