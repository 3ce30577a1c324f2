"""Fixtures: the two deployments (embedded files; PostgreSQL + Redis) and a real worker process.

Each test module gets its own database (a SQLite file, or a fresh PostgreSQL database dropped at
the end) and an empty broker (a SQLite file, or a Redis database number flushed before and after).
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.db import get_engine, migrate
from store.settings import Settings
from tests.worker.support import Deployment, WorkerProcess

PG_ADMIN = os.environ.get("DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = os.environ.get("DISTILLERY_TEST_REDIS_DB")  # default: an unused database number
LOCK_KEY = "distillery-test:in-use"

# short leases so a lost worker is noticed within seconds
TEST_SETTINGS = {"lease_s": 3.0, "cancel_grace_s": 20.0, "dispatch_interval_s": 0.5, "device": "cpu"}


def _embedded(home: Path) -> Deployment:
    values = {
        "home": home,
        "database_url": f"sqlite:///{home / 'distillery.db'}",
        "broker_url": f"sqla+sqlite:///{home / 'broker.db'}",
        **TEST_SETTINGS,
    }
    return _deployment("embedded", values)


def _deployment(name: str, values: dict[str, object]) -> Deployment:
    env = {f"DISTILLERY_{k.upper()}": str(v) for k, v in values.items()}
    return Deployment(name, Settings(**values), env)  # type: ignore[arg-type]


def _free_redis_db(redis: Any) -> Any:
    """A Redis database of our own: other test runs on this server may use a fixed number."""
    candidates = [int(REDIS_DB)] if REDIS_DB else random.sample(range(1, 16), 15)
    for n in candidates:
        client = redis.Redis.from_url(f"{REDIS}/{n}", socket_connect_timeout=3)
        if REDIS_DB:
            client.flushdb()
            return client
        # empty, and marked as taken (the mark goes with the FLUSHDB at the end)
        if client.dbsize() == 0 and client.set(LOCK_KEY, "1", nx=True, ex=3600):
            return client
        client.close()
    pytest.skip("no free Redis database")


@pytest.fixture(scope="module")
def postgres_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    psycopg = pytest.importorskip("psycopg")
    redis = pytest.importorskip("redis")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
        client = _free_redis_db(redis)
    except Exception as e:
        pytest.skip(f"PostgreSQL or Redis not reachable: {e}")
    name = f"distillery_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    home = tmp_path_factory.mktemp("pg-redis")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    broker = f"{REDIS}/{client.connection_pool.connection_kwargs['db']}"
    values = {"home": home, "database_url": url, "broker_url": broker, **TEST_SETTINGS}
    try:
        yield _deployment("postgres+redis", values)
    finally:
        get_engine(url).dispose()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        client.flushdb()
        client.close()


@pytest.fixture(scope="module", params=["embedded", "postgres+redis"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    if request.param == "embedded":
        dep = _embedded(tmp_path_factory.mktemp("embedded"))
    else:
        dep = request.getfixturevalue("postgres_redis")
    migrate(dep.db_url)
    return dep


@pytest.fixture(scope="module")
def worker(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module's tests (jobs run one at a time, each in a fresh child)."""
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    proc = WorkerProcess(deployment, log).wait_ready()
    try:
        yield proc
    finally:
        proc.stop()


def pytest_configure(config: pytest.Config) -> None:
    # kombu's SQLAlchemy transport (the embedded broker) uses a loader SQLAlchemy 2.1 deprecates
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy:DeprecationWarning")


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    # a failing test shows the end of its worker's log: that is where the reason usually is
    if call.when == "call" and call.excinfo is not None:
        worker = getattr(item, "funcargs", {}).get("worker")
        if isinstance(worker, WorkerProcess):
            item.add_report_section("call", "worker log", worker.log()[-4000:])
