"""Real processes for end-to-end tests: `distill api` (uvicorn) and `distill worker` (Celery), on the
embedded default (SQLite + file broker) or on this machine's PostgreSQL and Redis.

Shared by tests/e2e, tests/dashboard and tests/client; each folder's conftest re-exports the
fixtures it uses."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

DISTILL = str(Path(sys.executable).with_name("distill"))
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
TERMINAL = ("succeeded", "failed", "cancelled", "pruned")

TINY_JOB: dict[str, Any] = {
    "name": "e2e-tiny",
    "data": {"kind": "mnist1d", "train_limit": 400},
    "teacher": {"model": {"kind": "cnn1d", "channels": 16}, "train": {"epochs": 5, "batch_size": 50}},
    "student": {"model": {"kind": "mlp", "hidden": [32]}},
    "distill": {"epochs": 4, "batch_size": 50},
    "export": ["safetensors", "torchscript"],
    "runtime": {"measure_speed": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """An API process and any number of worker processes sharing one environment."""

    env: dict[str, str]
    home: Path
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # user -> token
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> httpx.Client:
        """The API as the admin of DISTILLERY_ADMIN_TOKEN."""
        return self.client(self.env["DISTILLERY_ADMIN_TOKEN"])

    @property
    def http(self) -> httpx.Client:
        """The API as ``e2e-user``, a member of team ``e2e`` (made when the API starts)."""
        return self.client(self.tokens["e2e-user"])

    def client(self, token: str) -> httpx.Client:
        if token not in self._clients:
            headers = {"Authorization": f"Bearer {token}"}
            self._clients[token] = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        return self._clients[token]

    def add_member(self, user: str, team: str, **limits: int) -> httpx.Client:
        """A user in ``team`` (made with ``limits`` unless it exists), and the API as them."""
        admin = self.admin
        if admin.get(f"/v1/teams/{team}").status_code == 404:
            assert admin.post("/v1/teams", json={"name": team, **limits}).status_code == 201
        assert admin.post("/v1/users", json={"name": user, "team": team}).status_code == 201
        made = admin.post("/v1/tokens", json={"user": user})
        assert made.status_code == 201, made.text
        self.tokens[user] = made.json()["token"]
        return self.client(self.tokens[user])

    def _spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        out = (self.home / log).open("ab")
        # a process group of its own, so a kill reaches the Celery parent and its pool child alike
        return subprocess.Popen(
            [DISTILL, *args], env=self.env, stdout=out, stderr=out, start_new_session=True
        )

    def start_api(self, *args: str) -> None:
        """``distill api``; one process unless ``args`` say ``--workers``: the suite's limits per
        API process (open streams, say) are checked against one (tests/e2e/test_api_processes.py
        runs several)."""
        if "--workers" not in args:
            args = ("--workers", "1", *args)
        self.api = self._spawn("api", "--port", str(self.port), *args, log="api.log")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.api.poll() is None, self.logs("api.log")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    if "e2e-user" not in self.tokens:
                        self.add_member("e2e-user", "e2e")
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError("the API did not start:\n" + self.logs("api.log"))

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        proc = self._spawn("worker", *args, log=f"worker{len(self.workers)}.log")
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            self.kill(proc, signal.SIGTERM)

    def logs(self, name: str) -> str:
        path = self.home / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{self.logs(p.name)}" for p in sorted(self.home.glob("*.log")))

    def wait_for(
        self, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 240
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/v1/jobs/{job_id}", timeout=10).json()
            if job["status"] in statuses:
                return job  # type: ignore[no-any-return]
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s\n{self.all_logs()}")


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env |= {
        "DISTILLERY_HOME": str(home),
        "DISTILLERY_DEVICE": "cpu",
        "DISTILLERY_DISPATCH_INTERVAL_S": "0.5",
        "DISTILLERY_ADMIN_TOKEN": f"dst_e2e-admin-{uuid.uuid4().hex}",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    return env


@pytest.fixture
def pg_database() -> Iterator[str]:
    name = f"distillery_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_db() -> Iterator[str]:
    index = 12  # tests/worker use 11
    client = redis.Redis(host="127.0.0.1", port=6379, db=index)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{index}"
    client.flushdb()


@pytest.fixture(params=["embedded", "postgres-redis"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment of one deployment: the embedded default, or PostgreSQL + Redis."""
    if request.param == "embedded":
        return base_env(tmp_path)
    db = request.getfixturevalue("pg_database")
    broker = request.getfixturevalue("redis_db")
    return base_env(tmp_path, DISTILLERY_DATABASE_URL=db, DISTILLERY_BROKER_URL=broker)


@pytest.fixture
def service(deployment: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    svc = Service(env=deployment, home=tmp_path)
    try:
        yield svc
    finally:
        svc.stop()


@contextlib.contextmanager
def running(home: Path, **extra: str) -> Iterator[Service]:
    """The embedded default (SQLite + file broker under ``home``) with the API and one worker up;
    ``extra`` adds DISTILLERY_* settings (a PostgreSQL ``DISTILLERY_DATABASE_URL``, say)."""
    svc = Service(env=base_env(home, **extra), home=home)
    try:
        svc.start_api()
        svc.start_worker()
        yield svc
    finally:
        svc.stop()
