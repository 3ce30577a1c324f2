"""Fixtures: the API against both databases, with a fake publisher instead of a broker.

Each test module gets its own database (a SQLite file, or a fresh PostgreSQL database dropped
at the end), so tests within a module share rows: they tag their jobs with unique names and
queues rather than assume empty tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from store.db import migrate
from store.settings import Settings
from tests.api.support import ADMIN_TOKEN, Member, new_member
from tests.databases import fresh_postgres


@dataclass
class FakeBroker:
    """Records published job ids; ``down`` makes every publish fail like an unreachable broker."""

    published: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False

    def publish(self, job_id: str, worker: str) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.published.append((job_id, worker))

    def ids(self) -> list[str]:
        return [job_id for job_id, _worker in self.published]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_postgres("distillery_api") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'distillery.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    migrate(url)
    return url


def make_settings(home: Path, db_url: str, **values: Any) -> Settings:
    return Settings(
        home=home,
        database_url=db_url,
        broker_url="memory://",
        artifacts_url=str(home / "artifacts"),
        data_root=home / "data",
        **({"admin_token": ADMIN_TOKEN, "rate_limit": "100000/minute"} | values),
    )


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def member(db_url: str) -> Member:
    """A member of a team of their own, with a token (each test gets a new team)."""
    return new_member(db_url)


@pytest.fixture
def client(settings: Settings, broker: FakeBroker, member: Member) -> Iterator[TestClient]:
    """The API as ``member`` sees it."""
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app, headers=member.headers) as test_client:
        yield test_client
