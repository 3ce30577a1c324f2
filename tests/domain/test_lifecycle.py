"""The lifecycle's moves: each one wins once, and only for the actor that holds the job."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import select

from core.errors import CancelledError, WorkerLostError
from domain.lifecycle import (
    Ending,
    claim,
    end,
    mark_published,
    reap_expired,
    renew,
    report_progress,
    request_cancel,
    standing,
    succeed,
)
from store.db import session_scope
from store.models import Artifact, Job, JobEvent, JobStatus, utcnow
from store.scheduler import Placement

ME, OTHER = "host-a:1", "host-b:2"
FILE = {
    "name": "student.pt",
    "filename": "student.pt",
    "size": 3,
    "sha256": "0" * 64,
    "location": "x/student.pt",
}


def new_job(db_url: str, **values: object) -> str:
    with session_scope(db_url) as session:
        job = Job(name="j", spec={}, team="vision", **values)
        session.add(job)
        session.flush()
        return job.id


def claimed(db_url: str, worker: str = ME, **values: object) -> str:
    """A job handed to ``worker``'s host, then claimed by it."""
    job_id = new_job(db_url, **values)
    with session_scope(db_url) as session:
        mark_published(session, job_id, Placement(worker.rsplit(":", 1)[0], (0,)))
        assert claim(session, job_id, worker, lease_s=60) is not None
    return job_id


def row(db_url: str, job_id: str) -> Job:
    with session_scope(db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def moves(db_url: str, job_id: str) -> list[str | None]:
    with session_scope(db_url) as session:
        stmt = select(JobEvent.to_status).where(JobEvent.job_id == job_id, JobEvent.kind == "status")
        return list(session.scalars(stmt.order_by(JobEvent.id)))


def test_a_job_is_claimed_once(db_url: str) -> None:
    job_id = claimed(db_url)
    with session_scope(db_url) as session:
        assert claim(session, job_id, OTHER, lease_s=60) is None  # a duplicate delivery
        assert claim(session, "nope", OTHER, lease_s=60) is None
    job = row(db_url, job_id)
    assert (job.status, job.attempt, job.lease_owner) == (JobStatus.STARTING, 1, ME)
    assert isinstance(job.status, JobStatus) and job.started_at is not None


def test_a_claim_that_beats_the_dispatchers_commit_waits_for_it(db_url: str) -> None:
    """The host's worker gets the message while the pass that placed the job has not committed
    yet (it ranks and stores the queue's places after publishing). Its claim must wait for that
    commit and find the placement, not skip the row it still sees unplaced: a skipped claim left
    the job handed over and untaken until the broker-loss republish, five minutes later."""
    job_id = new_job(db_url)
    host = ME.rsplit(":", 1)[0]
    with ThreadPoolExecutor(1) as pool, session_scope(db_url) as dispatcher:
        mark_published(dispatcher, job_id, Placement(host, (0,)))  # published, not yet committed
        dispatcher.flush()

        def take() -> str | None:
            with session_scope(db_url) as session:
                job = claim(session, job_id, ME, lease_s=60)
                return None if job is None else job.lease_owner

        taken = pool.submit(take)
        time.sleep(0.5)
        assert not taken.done(), "the claim did not wait for the dispatcher's transaction"
        dispatcher.commit()
        assert taken.result(timeout=30) == ME
    job = row(db_url, job_id)
    assert (job.status, job.placed_on, job.devices) == (JobStatus.STARTING, host, [0])


def test_progress_starts_the_run_only_for_the_lease_holder(db_url: str) -> None:
    job_id = claimed(db_url)
    with session_scope(db_url) as session:
        report_progress(session, job_id, OTHER, {"fraction": 0.5}, first=True)
    assert row(db_url, job_id).status == JobStatus.STARTING and row(db_url, job_id).progress is None
    with session_scope(db_url) as session:
        report_progress(session, job_id, ME, {"fraction": 0.1}, first=True)
        assert standing(session, job_id, ME).lost is False
        assert standing(session, job_id, OTHER).lost is True
    job = row(db_url, job_id)
    assert job.status == JobStatus.RUNNING and job.progress == {"fraction": 0.1}


def test_a_cancel_request_is_seen_by_the_holder(db_url: str) -> None:
    job_id = claimed(db_url)
    with session_scope(db_url) as session:
        assert request_cancel(session, job_id, actor="ana") is not None
        mine, theirs = standing(session, job_id, ME), standing(session, job_id, OTHER)
    assert mine.cancel_requested and not mine.lost
    assert theirs.lost and not theirs.cancel_requested


def test_success_brings_its_artifacts_and_is_safe_to_write_twice(db_url: str) -> None:
    job_id = claimed(db_url)
    with session_scope(db_url) as session:
        assert not succeed(session, job_id, OTHER, report={}, progress={}, artifacts=[FILE])
    for _try in range(2):  # the second: a retry after a commit whose answer was lost
        with session_scope(db_url) as session:
            assert succeed(session, job_id, ME, report={"kd_gain": 0.1}, progress={}, artifacts=[FILE])
    with session_scope(db_url) as session:
        assert [a.job_id for a in session.scalars(select(Artifact))] == [job_id]
    assert row(db_url, job_id).report == {"kd_gain": 0.1}
    assert moves(db_url, job_id) == ["starting", "succeeded"]


def test_a_job_asked_to_cancel_does_not_succeed(db_url: str) -> None:
    job_id = claimed(db_url)
    with session_scope(db_url) as session:
        request_cancel(session, job_id)
        assert not succeed(session, job_id, ME, report={}, progress={}, artifacts=[FILE])
        assert end(session, job_id, ME, Ending.cancelled("cancelled as the run finished"))
        assert session.scalars(select(Artifact)).all() == []
    job = row(db_url, job_id)
    assert job.status == JobStatus.CANCELLED and job.error is not None
    assert job.error == {"type": CancelledError.type, "message": "cancelled as the run finished"}


def test_endings_name_the_states_they_may_leave(db_url: str) -> None:
    job_id = claimed(db_url)
    with session_scope(db_url) as session:
        assert not end(session, job_id, ME, Ending.cancelled("stop"))  # nobody asked
        assert not end(session, job_id, OTHER, Ending.failed("internal", "boom"))  # not its job
        assert end(session, job_id, ME, Ending.failed("internal", "boom\nat line 3"), progress={"epoch": 2})
    job = row(db_url, job_id)
    assert job.status == JobStatus.FAILED and job.error == {"type": "internal", "message": "boom\nat line 3"}
    assert job.progress == {"epoch": 2} and job.finished_at is not None
    with session_scope(db_url) as session:
        events = session.scalars(select(JobEvent.message).where(JobEvent.to_status == "failed")).all()
    assert events == ["boom"]  # the event keeps the first line


def test_renewal_extends_the_lease_and_ends_an_overdue_cancellation(db_url: str) -> None:
    job_id = claimed(db_url)
    before = row(db_url, job_id).lease_expires_at
    with session_scope(db_url) as session:
        assert renew(session, job_id, ME, 600, 30) == (True, False)
        assert renew(session, job_id, OTHER, 600, 30) == (False, False)
    assert row(db_url, job_id).lease_expires_at != before
    with session_scope(db_url) as session:
        request_cancel(session, job_id)
        assert renew(session, job_id, ME, 600, 30) == (True, False)  # within the grace period
        session.get(Job, job_id).cancel_requested_at = utcnow() - timedelta(seconds=31)  # type: ignore[union-attr]
    with session_scope(db_url) as session:
        assert renew(session, job_id, ME, 600, 30) == (False, True)
    job = row(db_url, job_id)
    assert job.status == JobStatus.CANCELLED and job.error is not None
    assert job.error["type"] == CancelledError.type


def test_the_reaper_retries_fails_or_cancels_a_lost_job(db_url: str) -> None:
    later = utcnow() + timedelta(seconds=120)
    retry = claimed(db_url, max_attempts=2)
    spent = claimed(db_url, max_attempts=1)
    stopping = claimed(db_url)
    fresh = claimed(db_url)
    with session_scope(db_url) as session:
        request_cancel(session, stopping)
        renew(session, fresh, ME, 600, 30)  # renewed: its lease outlives ``later``
    with session_scope(db_url) as session:
        assert sorted(reap_expired(session, now=later)) == sorted([retry, spent, stopping])
        assert reap_expired(session, now=later) == []  # each move wins once
    assert (row(db_url, retry).status, row(db_url, retry).lease_owner) == (JobStatus.RETRYING, None)
    assert (row(db_url, retry).placed_on, row(db_url, retry).devices) == (None, None)  # placed anew
    assert row(db_url, spent).status == JobStatus.FAILED
    assert row(db_url, spent).error["type"] == WorkerLostError.type  # type: ignore[index]
    assert row(db_url, stopping).status == JobStatus.CANCELLED
    assert row(db_url, fresh).status == JobStatus.STARTING


def test_publishing_places_requeues_a_retrying_job_and_marks_a_queued_one(db_url: str) -> None:
    waiting = new_job(db_url)
    retrying = new_job(db_url, status=JobStatus.RETRYING)
    here = Placement("host-a", (2, 3))
    with session_scope(db_url) as session:
        mark_published(session, waiting, here)
        mark_published(session, retrying, here)
        mark_published(session, waiting, here)  # its message was lost: published again
        mark_published(session, "nope", here)
    for job_id in (waiting, retrying):
        job = row(db_url, job_id)
        assert job.status == JobStatus.QUEUED and job.published_at is not None
        assert (job.placed_on, job.devices) == ("host-a", [2, 3])
    assert moves(db_url, retrying) == ["queued"] and moves(db_url, waiting) == []
    with session_scope(db_url) as session:
        notes = session.scalars(
            select(JobEvent.message).where(JobEvent.job_id == waiting).order_by(JobEvent.id)
        ).all()
    assert notes == [
        "handed to the pool: host-a, devices 2,3",
        "published again (the broker lost it): host-a, devices 2,3",
    ]
