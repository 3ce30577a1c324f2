"""The database sink and the lease renewer, in this process against both databases; and how
they ride out a database outage (PostgreSQL behind a proxy that the tests cut and restore)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from core.sink import Progress
from domain.lifecycle import Ending, request_cancel
from store.db import get_engine, migrate, session_scope
from store.jobs import add_event_once
from store.models import Job, Metric, utcnow
from store.settings import Settings
from tests.databases import fresh_postgres
from tests.worker.support import TINY, Deployment, events, get_job, insert_job, metric_keys, wait_until
from worker.lease import EXIT_CANCELLED, Lease, LeaseRenewer
from worker.sink import DbSink
from worker.tasks import Attempt

ME = "host-a:1"


def started_job(dep: Deployment, owner: str = ME, lease_s: float = 30) -> str:
    """A job as a claim leaves it: starting, leased to ``owner``."""
    return insert_job(
        dep.db_url,
        TINY,
        status="starting",
        attempt=1,
        lease_owner=owner,
        lease_expires_at=utcnow() + timedelta(seconds=lease_s),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def progress(epoch: int, fraction: float) -> Progress:
    return Progress("student", epoch, 3, 10, 10, fraction, 5.0)


def test_progress_starts_running_and_is_throttled(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    clock = Clock()
    sink = DbSink(deployment.db_url, job_id, ME, clock=clock)
    sink.progress(progress(1, 0.1))
    job = get_job(deployment.db_url, job_id)
    assert job.status == "running"
    assert job.progress is not None and job.progress["fraction"] == 0.1
    assert set(job.progress) >= {"stage", "epoch", "epochs", "step", "steps", "fraction", "eta_s"}

    clock.now = 0.5
    sink.progress(progress(2, 0.2))  # too soon: kept in memory only
    assert get_job(deployment.db_url, job_id).progress["fraction"] == 0.1  # type: ignore[index]
    assert sink.last_progress is not None and sink.last_progress["fraction"] == 0.2
    clock.now = 1.6
    sink.progress(progress(3, 0.3))
    assert get_job(deployment.db_url, job_id).progress["fraction"] == 0.3  # type: ignore[index]


def test_metrics_replayed_never_duplicate(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    sink = DbSink(deployment.db_url, job_id, ME)
    sink.metrics("student", 1, 10, {"train/loss": 2.0, "val/top1": 0.5})
    sink.metrics("student", 2, 20, {"train/loss": 1.5, "val/top1": 0.6})
    sink.metrics("student", 2, 20, {"train/loss": 1.4, "val/top1": 0.61})  # epoch 2 replayed
    assert metric_keys(deployment.db_url, job_id) == (4, 4)


def test_non_finite_metrics_are_left_out(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    sink = DbSink(deployment.db_url, job_id, ME)
    sink.metrics("teacher", 1, 5, {"train/loss": float("nan"), "val/top1": 0.5})
    assert metric_keys(deployment.db_url, job_id) == (1, 1)
    assert any("train/loss" in e.message for e in events(deployment.db_url, job_id, "log"))


def test_log_lines_are_events(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    DbSink(deployment.db_url, job_id, ME).log("stage student: 3 epochs")
    [event] = events(deployment.db_url, job_id, "log")
    assert (event.message, event.actor) == ("stage student: 3 epochs", ME)


def test_stops_when_cancelling(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    clock = Clock()
    sink = DbSink(deployment.db_url, job_id, ME, clock=clock)
    assert not sink.should_stop()
    with session_scope(deployment.db_url) as session:
        request_cancel(session, job_id, actor="someone")
    assert not sink.should_stop()  # read at most once a second
    clock.now = 1.5
    assert sink.should_stop() and sink.cancel_seen and not sink.lease_lost


def test_stops_when_the_lease_is_lost(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    sink = DbSink(deployment.db_url, job_id, ME, interval_s=0)
    assert not sink.should_stop()
    with session_scope(deployment.db_url) as session:  # reaped, then claimed by another worker
        job = session.get(Job, job_id)
        assert job is not None
        job.lease_owner = "host-b:2"
    assert sink.should_stop() and sink.lease_lost


def test_renewal_extends_the_lease(deployment: Deployment) -> None:
    job_id = started_job(deployment, lease_s=1)
    before = get_job(deployment.db_url, job_id).lease_expires_at
    renewer = LeaseRenewer(deployment.db_url, job_id, ME, lease_s=60, cancel_grace_s=30)
    assert renewer.tick()
    after = get_job(deployment.db_url, job_id).lease_expires_at
    assert before is not None and after is not None and after > before + timedelta(seconds=30)


def test_renewal_stops_once_the_job_is_someone_elses(deployment: Deployment) -> None:
    job_id = started_job(deployment, owner="host-b:2")
    renewer = LeaseRenewer(deployment.db_url, job_id, ME, lease_s=0.3, cancel_grace_s=30).start()
    renewer.stop()  # the thread ends on its own; stop() just joins it
    assert not renewer.tick()
    assert get_job(deployment.db_url, job_id).lease_owner == "host-b:2"


def test_a_cancellation_ignored_past_the_grace_period_terminates(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    with session_scope(deployment.db_url) as session:
        request_cancel(session, job_id)
        job = session.get(Job, job_id)
        assert job is not None
        job.cancel_requested_at = utcnow() - timedelta(seconds=10)
    exits: list[int] = []
    renewer = LeaseRenewer(deployment.db_url, job_id, ME, lease_s=30, cancel_grace_s=5, exit_fn=exits.append)
    assert not renewer.tick()
    assert exits == [EXIT_CANCELLED]
    job = get_job(deployment.db_url, job_id)
    assert job.status == "cancelled" and job.error == {
        "type": "cancelled",
        "message": "cancelled; the run was terminated",
    }


def test_a_recent_cancellation_only_renews(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    with session_scope(deployment.db_url) as session:
        request_cancel(session, job_id)
    exits: list[int] = []
    renewer = LeaseRenewer(deployment.db_url, job_id, ME, lease_s=30, cancel_grace_s=5, exit_fn=exits.append)
    assert renewer.tick()
    assert exits == [] and get_job(deployment.db_url, job_id).status == "cancelling"


# ---------------------------------------------------------------- database outages


class Cuttable:
    """A TCP proxy in front of PostgreSQL: ``cut()`` drops every connection and turns new ones
    away, as a stopped server would; ``restore()`` lets them through again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.down = False
        self.open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self.down = True
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.open.clear()

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.cut()
        self.server.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                with self._lock:
                    if self.down:
                        client.close()
                        continue
                    upstream = socket.create_connection(self.target)
                    self.open += [client, upstream]
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@dataclass
class Outage:
    direct: str  # the database itself, for the test's own reads
    url: str  # the same database through the proxy, for the code under test
    proxy: Cuttable


@pytest.fixture(scope="module")
def outage() -> Iterator[Outage]:
    with fresh_postgres("distillery_outage") as direct:
        migrate(direct)
        address = make_url(direct)
        proxy = Cuttable((address.host or "127.0.0.1", address.port or 5432))
        url = address.set(port=proxy.port).render_as_string(hide_password=False)
        try:
            yield Outage(direct, url, proxy)
        finally:
            proxy.close()
            get_engine(url).dispose()


@pytest.fixture
def db(outage: Outage) -> Iterator[Outage]:
    outage.proxy.restore()
    yield outage
    outage.proxy.restore()


def pg(db: Outage) -> Deployment:
    return Deployment("postgres", Settings(database_url=db.direct))


def log_lines(db_url: str, job_id: str) -> list[str]:
    return [e.message for e in events(db_url, job_id, "log")]


def stored_epochs(db_url: str, job_id: str) -> list[tuple[str, int]]:
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Metric.stage, Metric.epoch).where(Metric.job_id == job_id).order_by(Metric.id)
        )
        return [(stage, epoch) for stage, epoch in rows]


def test_an_outage_holds_writes_and_flushes_them_in_order(db: Outage) -> None:
    job_id = started_job(pg(db))
    clock = Clock()
    sink = DbSink(db.url, job_id, ME, clock=clock, lease=Lease(60, clock=clock))
    sink.progress(progress(1, 0.1))
    sink.metrics("student", 1, 10, {"train/loss": 2.0})

    db.proxy.cut()
    clock.now = 1.0
    sink.log("during the outage")
    sink.metrics("student", 2, 20, {"train/loss": 1.5})
    clock.now = 2.5
    sink.progress(progress(3, 0.3))
    sink.metrics("student", 3, 30, {"train/loss": 1.0})
    sink.log("still away")
    assert not sink.should_stop() and not sink.lease_lost  # training goes on
    assert sink.pending == 5 and stored_epochs(db.direct, job_id) == [("student", 1)]

    db.proxy.restore()
    clock.now = 10.0  # past the backoff: the next call writes everything
    assert not sink.should_stop()
    assert sink.pending == 0 and sink.dropped == 0
    assert stored_epochs(db.direct, job_id) == [("student", 1), ("student", 2), ("student", 3)]
    assert log_lines(db.direct, job_id) == ["during the outage", "still away"]
    job = get_job(db.direct, job_id)
    assert job.status == "running" and job.progress is not None and job.progress["fraction"] == 0.3


def test_the_buffer_is_bounded_and_lets_the_oldest_go(db: Outage) -> None:
    job_id = started_job(pg(db))
    clock = Clock()
    sink = DbSink(db.url, job_id, ME, clock=clock, max_pending=3)
    db.proxy.cut()
    for epoch in range(1, 6):
        sink.metrics("student", epoch, epoch, {"train/loss": 1.0 / epoch})
    assert (sink.pending, sink.dropped) == (3, 2)
    db.proxy.restore()
    assert sink.flush()
    assert [e for _, e in stored_epochs(db.direct, job_id)] == [3, 4, 5]


def test_a_replayed_log_line_is_written_once(db: Outage) -> None:
    job_id = started_job(pg(db))
    at = utcnow()
    for _ in range(2):  # the first commit's answer lost: the writer sends it again
        with session_scope(db.direct) as session:
            add_event_once(session, job_id, "log", "epoch 3 done", at=at, actor=ME)
    assert log_lines(db.direct, job_id) == ["epoch 3 done"]


def test_the_attempt_gives_up_once_the_lease_would_have_run_out(db: Outage) -> None:
    job_id = started_job(pg(db))
    clock = Clock()
    sink = DbSink(db.url, job_id, ME, clock=clock, lease=Lease(30, clock=clock))
    db.proxy.cut()
    sink.metrics("student", 1, 10, {"train/loss": 2.0})
    clock.now = 29.0
    assert not sink.should_stop()
    clock.now = 31.0
    assert sink.should_stop() and sink.lease_lost and not sink.cancel_seen


def test_renewal_retries_promptly_and_its_first_success_renews(db: Outage) -> None:
    job_id = started_job(pg(db), lease_s=60)
    before = get_job(db.direct, job_id).lease_expires_at
    db.proxy.cut()
    # renews every 20 s when all is well; during an outage it tries every couple of seconds
    renewer = LeaseRenewer(db.url, job_id, ME, lease_s=60, cancel_grace_s=40).start()
    try:
        wait_until(lambda: renewer.failing, 10, "a failed renewal")
        db.proxy.restore()
        wait_until(lambda: get_job(db.direct, job_id).lease_expires_at != before, 5, "a renewal")
        assert renewer.alive and not renewer.failing
    finally:
        renewer.stop()


def test_the_job_s_end_waits_for_the_database(db: Outage, tmp_path: Path) -> None:
    job_id = started_job(pg(db))
    settings = Settings(home=tmp_path, database_url=db.url, lease_s=60)
    attempt = Attempt(settings, job_id, ME)
    attempt.sink = DbSink(db.url, job_id, ME, lease=attempt.lease)
    db.proxy.cut()
    attempt.sink.metrics("student", 1, 10, {"train/loss": 2.0})
    threading.Timer(1.5, db.proxy.restore).start()
    assert attempt._end(Ending.failed("internal", "boom")) == "failed"
    assert get_job(db.direct, job_id).status == "failed"
    assert stored_epochs(db.direct, job_id) == [("student", 1)]  # written before the ending


def test_the_job_s_end_gives_up_when_the_lease_runs_out(db: Outage, tmp_path: Path) -> None:
    job_id = started_job(pg(db))
    attempt = Attempt(Settings(home=tmp_path, database_url=db.url, lease_s=1), job_id, ME)
    db.proxy.cut()
    assert attempt._end(Ending.failed("internal", "boom")) == "lost"
    assert get_job(db.direct, job_id).status == "starting"


def test_an_ending_whose_answer_was_lost_is_not_lost(deployment: Deployment) -> None:
    job_id = started_job(deployment)
    attempt = Attempt(deployment.settings, job_id, ME)
    assert attempt._end(Ending.failed("internal", "boom")) == "failed"
    # the same write again (its first commit landed, but the worker never heard so)
    assert attempt._end(Ending.failed("internal", "boom")) == "failed"
    assert [e.to_status for e in events(deployment.db_url, job_id, "status")] == ["failed"]
