"""A job's version (the API's ETag) moves with anything a follower would fetch."""

from __future__ import annotations

from store.db import session_scope
from store.jobs import add_event, record_metrics, touch
from store.models import Job


def _version(db_url: str, job_id: str) -> int:
    with session_scope(db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.version


def test_new_metrics_and_events_change_the_version(db_url: str) -> None:
    with session_scope(db_url) as session:
        job = Job(name="v", owner="u", spec={}, status="running", queue="any")
        session.add(job)
        session.flush()
        job_id = job.id
    start = _version(db_url, job_id)
    with session_scope(db_url) as session:
        record_metrics(session, job_id, "student", 1, 10, {"train/loss": 0.5})
    after_metrics = _version(db_url, job_id)
    assert after_metrics > start
    with session_scope(db_url) as session:
        loaded = session.get(Job, job_id)
        assert loaded is not None and loaded.version == after_metrics
        add_event(session, job_id, "log", "hello")
        # the session's own copy follows the update: an ETag computed from it is current
        in_session = loaded.version
    assert _version(db_url, job_id) == in_session == after_metrics + 1
    with session_scope(db_url) as session:
        record_metrics(session, job_id, "student", 1, 10, {"train/loss": float("nan")})  # nothing stored
        touch(session, job_id, progress={"stage": "student"})
    assert _version(db_url, job_id) == in_session + 1
