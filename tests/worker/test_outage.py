"""A database outage shorter than the lease: the job trains through it and the API answers 503.

Real processes (the API, a Celery worker, Redis) on a PostgreSQL server of the test's own, made
with ``initdb`` in a temporary folder, so stopping it disturbs nothing else on this machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from store.db import get_engine, migrate, session_scope
from store.models import JobEvent, Metric
from tests.service import Service, base_env, free_port
from tests.worker.conftest import REDIS, _free_redis_db
from tests.worker.support import SLOW

OUTAGE_S = 30
LEASE_S = 90  # longer than the outage: nobody may take the job meanwhile
# Shorter than the outage, as by default: heartbeats fail while the database is away, and the
# reaper then gives each worker a whole timeout to be heard from again before it is lost.
WORKER_TIMEOUT_S = 20

# the workers' slow job, shorter: running before, during and after the outage
LONG_JOB: dict[str, Any] = {
    **SLOW,
    "name": "outage",
    "teacher": {**SLOW["teacher"], "train": {"epochs": 2}},
    "distill": {"epochs": 70, "transfer": {"choose": "always"}},  # one student: the outage is the point
}
EPOCHS = {"teacher": 2, "student": 70}


class PrivatePostgres:
    """``initdb``, ``pg_ctl start`` and ``stop`` on a folder and a port of this test's own."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root = bindir, root
        self.data, self.port = root / "data", free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{tool} {args}: {done.stdout}\n{done.stderr}\n{self.log()}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def start(self) -> None:
        options = f"-k {self.root} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        self._run(
            "pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.root / "pg.log"), "-o", options
        )

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def log(self) -> str:
        path = self.root / "pg.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists("postgres")):
        pytest.skip("running as root needs runuser and a postgres user to start PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="distillery-outage-"))  # not under pytest's root-only folders
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(Path(found[-1]).parent, root)
    server.init()
    server.start()
    try:
        migrate(server.url)
        yield server
    finally:
        get_engine(server.url).dispose()
        with contextlib.suppress(AssertionError):
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def broker() -> Iterator[str]:
    redis = pytest.importorskip("redis")
    try:
        client = _free_redis_db(redis)
    except redis.RedisError as e:
        pytest.skip(f"Redis not reachable: {e}")
    try:
        yield f"{REDIS}/{client.connection_pool.connection_kwargs['db']}"
    finally:
        client.flushdb()
        client.close()


def metric_rows(db_url: str, job_id: str) -> list[tuple[str, int, int, str]]:
    with session_scope(db_url) as session:
        stmt = select(Metric.stage, Metric.epoch, Metric.step, Metric.name).where(Metric.job_id == job_id)
        return [tuple(row) for row in session.execute(stmt)]  # type: ignore[misc]


def job_events(db_url: str, job_id: str) -> list[JobEvent]:
    with session_scope(db_url) as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def wait(check: Any, timeout: float, what: str, service: Service) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{service.all_logs()}")


def test_a_job_trains_through_a_database_outage(
    postgres: PrivatePostgres, broker: str, tmp_path: Path
) -> None:
    env = base_env(
        tmp_path,
        DISTILLERY_DATABASE_URL=postgres.url,
        DISTILLERY_BROKER_URL=broker,
        DISTILLERY_LEASE_S=str(LEASE_S),
        DISTILLERY_WORKER_TIMEOUT_S=str(WORKER_TIMEOUT_S),
        OMP_NUM_THREADS="1",
    )
    service = Service(env=env, home=tmp_path)
    try:
        service.start_api()
        service.start_worker()
        r = service.http.post("/v1/jobs", json=LONG_JOB, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        def student_epochs() -> int:
            return len(
                {epoch for stage, epoch, _, _ in metric_rows(postgres.url, job_id) if stage == "student"}
            )

        wait(lambda: student_epochs() >= 3, 240, "the student's first epochs", service)
        before = student_epochs()
        postgres.stop()
        stopped = time.monotonic()
        r = service.http.get(f"/v1/jobs/{job_id}", timeout=30)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == "urn:distillery:problem:database-unavailable"
        assert int(r.headers["Retry-After"]) > 0
        assert service.http.get("/readyz", timeout=30).status_code == 503
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        assert all(w.poll() is None for w in service.workers), service.all_logs()
        postgres.start()
        # the epochs trained meanwhile arrive at once: training went on while the database was away
        wait(lambda: student_epochs() >= before + 3, 10, "the epochs held during the outage", service)

        done = service.wait_for(job_id, timeout=600)
    finally:
        service.stop()
    logs = service.all_logs()
    assert (done["status"], done["attempt"]) == ("succeeded", 1), logs

    # every epoch of every stage exactly once, and nothing else
    rows = metric_rows(postgres.url, job_id)
    assert len(rows) == len(set(rows)), "duplicated metric rows"
    epochs = {(stage, epoch) for stage, epoch, _, _ in rows}
    assert epochs == {(stage, e) for stage, n in EPOCHS.items() for e in range(1, n + 1)}, logs
    names = Counter((stage, epoch) for stage, epoch, _, _ in rows)
    assert len({names[key] for key in epochs if key[0] == "student"}) == 1  # same metrics each epoch

    events = job_events(postgres.url, job_id)
    keys = Counter((e.kind, e.message, e.at, e.actor) for e in events)
    assert max(keys.values()) == 1, [key for key, n in keys.items() if n > 1]
    assert [(e.from_status, e.to_status) for e in events if e.kind == "status"] == [
        ("queued", "starting"),
        ("starting", "running"),
        ("running", "succeeded"),
    ]
    worker_log = (tmp_path / "worker0.log").read_text(errors="replace")
    assert worker_log.count(f"job {job_id}: database unreachable") == 1, worker_log[-4000:]
    assert worker_log.count(f"job {job_id}: database reachable again") == 1, worker_log[-4000:]
