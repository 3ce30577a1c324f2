"""The database sink and the lease renewer, in this process against both databases."""

from __future__ import annotations

from datetime import timedelta

from core.sink import Progress
from store.db import session_scope
from store.jobs import request_cancel
from store.models import Job, utcnow
from tests.worker.support import TINY, Deployment, events, get_job, insert_job, metric_keys
from worker.lease import EXIT_CANCELLED, LeaseRenewer
from worker.sink import DbSink

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
