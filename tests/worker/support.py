"""Helpers for the worker's tests: deployments, job rows, a real worker process, polling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select

from core.spec import parse_spec
from domain.lifecycle import mark_published
from store.db import session_scope
from store.models import Job, JobEvent, Metric, Worker, as_utc, utcnow
from store.scheduler import Placement
from store.settings import Settings
from worker.celery_app import DistilleryCelery, make_celery, publish
from worker.main import node_name

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

TINY: dict[str, Any] = {
    "data": {"kind": "mnist1d", "train_limit": 300},
    "teacher": {"model": {"kind": "cnn1d", "channels": 8}, "train": {"epochs": 2}},
    "student": {"model": {"kind": "mlp", "hidden": [16]}},
    "distill": {"epochs": 3},
    "export": ["torchscript"],
    "runtime": {"measure_speed": False},
}

# about half a second per student epoch on one CPU thread: long enough to cancel or kill mid-stage
SLOW: dict[str, Any] = {
    "data": {"kind": "mnist1d", "train_limit": 3000},
    "teacher": {"model": {"kind": "cnn1d", "channels": 8}, "train": {"epochs": 1}},
    "student": {"model": {"kind": "mlp", "hidden": [1024, 1024]}},
    "baseline": False,
    "distill": {"epochs": 200},
    "export": ["torchscript"],
    "runtime": {"measure_speed": False},
}


def with_epochs(spec: dict[str, Any], epochs: int) -> dict[str, Any]:
    return {**spec, "distill": {**spec["distill"], "epochs": epochs}}


@dataclass
class Deployment:
    """One way to run the service: the embedded files, or PostgreSQL + Redis."""

    name: str
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)  # DISTILLERY_* for worker processes

    @property
    def db_url(self) -> str:
        return self.settings.db_url

    @cached_property
    def app(self) -> DistilleryCelery:
        return make_celery(self.settings)

    @property
    def default_node(self) -> str:
        """The node name of a ``python -m worker`` started without options on this machine."""
        return node_name(self.settings, hostname=socket.gethostname())

    def publish(self, job_id: str, worker: str) -> None:
        """The dispatcher's ``PublishFn``: the message only."""
        publish(self.app, job_id, worker)

    def hand(self, job_id: str, worker: str | None = None, devices: tuple[int, ...] = (0,)) -> None:
        """What a dispatcher pass does for one job: place it on ``worker`` (default: the module's
        worker), then publish it there; without the placement, the worker would claim nothing."""
        placement = Placement(worker or self.default_node, devices)
        with session_scope(self.db_url) as session:
            mark_published(session, job_id, placement)
        publish(self.app, job_id, placement.worker)


def insert_job(
    db_url: str, spec: dict[str, Any], *, max_attempts: int = 3, queue: str = "any", **values: Any
) -> str:
    """A job row as the API would commit it (the spec validated and stored as JSON)."""
    data = parse_spec(spec).model_dump(mode="json")
    with session_scope(db_url) as session:
        job = Job(name="test", spec=data, queue=queue, max_attempts=max_attempts, **values)
        session.add(job)
        session.flush()
        return job.id


def get_job(db_url: str, job_id: str) -> Job:
    with session_scope(db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_status(db_url: str, job_id: str, statuses: tuple[str, ...], timeout: float = 60) -> Job:
    def check() -> Job | None:
        job = get_job(db_url, job_id)
        return job if job.status in statuses else None

    try:
        return wait_until(check, timeout, f"job {job_id} to reach {statuses}")
    except AssertionError:
        job = get_job(db_url, job_id)
        raise AssertionError(f"job {job_id} is {job.status} (error {job.error}), not in {statuses}") from None


def events(db_url: str, job_id: str, kind: str | None = None) -> list[JobEvent]:
    with session_scope(db_url) as session:
        stmt = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        if kind is not None:
            stmt = stmt.where(JobEvent.kind == kind)
        return list(session.scalars(stmt))


def claims(db_url: str, job_id: str) -> int:
    return sum(1 for e in events(db_url, job_id, "status") if e.to_status == "starting")


def metric_keys(db_url: str, job_id: str) -> tuple[int, int]:
    """(rows, distinct keys) of a job's metrics: equal when no replay duplicated anything."""
    with session_scope(db_url) as session:
        rows = session.scalar(select(func.count()).select_from(Metric).where(Metric.job_id == job_id))
        keys = select(Metric.stage, Metric.epoch, Metric.step, Metric.name).where(Metric.job_id == job_id)
        distinct = session.scalar(select(func.count()).select_from(keys.distinct().subquery()))
        return int(rows or 0), int(distinct or 0)


def _node(settings: Settings, extra: tuple[str, ...]) -> str:
    """The node name ``python -m worker`` with these arguments registers in the pool."""
    args = {flag: value for flag, value in pairwise(extra) if flag.startswith("--")}
    if "--gpu-type" in args:
        settings = settings.model_copy(update={"gpu_type": args["--gpu-type"]})
    gpus = args.get("--gpus") or args.get("--gpu")
    return node_name(settings, gpu=gpus, hostname=args.get("--hostname") or socket.gethostname())


class WorkerProcess:
    """A real ``python -m worker`` (Celery prefork pool) in its own process group."""

    def __init__(self, deployment: Deployment, log_path: Path, *extra: str) -> None:
        # the dispatcher hands jobs only to workers online in the pool: ready means registered too
        self.db_url, self.node, self.spawned_at = (
            deployment.db_url,
            _node(deployment.settings, extra),
            utcnow(),
        )
        env = {**os.environ, **deployment.env, "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "--loglevel", "INFO", *extra],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the pool's children die with it
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> WorkerProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            return " ready." in self.log() and self.registered()

        wait_until(ready, timeout, "the worker to be ready and registered in the pool")
        return self

    def registered(self) -> bool:
        """Its heartbeat has reached the database since it was started."""
        with session_scope(self.db_url) as session:
            worker = session.get(Worker, self.node)
            return (
                worker is not None
                and worker.status == "online"
                and as_utc(worker.last_heartbeat_at) >= self.spawned_at
            )

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole group (the parent and the child that trains)."""
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.kill(signal.SIGKILL)  # a child left behind by a warm shutdown
        self._log.close()
