"""The pool: heartbeats register workers, silence marks them lost and frees their jobs at once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from domain.lifecycle import claim, reap_expired
from store.db import session_scope
from store.models import Job, Worker, utcnow
from store.pool import heartbeat, mark_lost, pool_view, sign_off, stranded

GPU = [{"index": 0, "name": "NVIDIA H100", "memory_mb": 81559.0, "memory_used_mb": 1.0, "utilization": 0.0}]


def add_job(session: Session, team: str, queue: str = "any") -> str:
    job = Job(name="j", spec={}, team=team, queue=queue)
    session.add(job)
    session.flush()
    return job.id


def test_heartbeat_registers_and_reports_the_held_job(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id = add_job(session, "vision")
        assert claim(session, job_id, "distillery-h100@gpu1:4242", lease_s=60) is not None
        heartbeat(session, "distillery-h100@gpu1", host="gpu1", gpu_type="h100", devices=GPU)
        heartbeat(session, "distillery-any@cpu1", host="cpu1", gpu_type="any", devices=[{"name": "cpu"}])
    with session_scope(db_url) as session:
        view = pool_view(session)
    by_id = {w["id"]: w for w in view["workers"]}
    gpu = by_id["distillery-h100@gpu1"]
    assert gpu["status"] == "online" and gpu["devices"] == GPU and gpu["job"]["id"] == job_id
    assert by_id["distillery-any@cpu1"]["job"] is None
    assert view["teams"] == [{"team": "vision", "queued": 0, "running": 1}]


def test_queue_counts_per_team_and_gpu_type(db_url: str) -> None:
    with session_scope(db_url) as session:
        for team, queue in [("a", "any"), ("a", "any"), ("a", "h100"), ("b", "any")]:
            add_job(session, team, queue)
    with session_scope(db_url) as session:
        view = pool_view(session)
    assert view["teams"] == [
        {"team": "a", "queued": 3, "running": 0},
        {"team": "b", "queued": 1, "running": 0},
    ]
    assert view["queues"] == [
        {"queue": "any", "queued": 3, "running": 0},
        {"queue": "h100", "queued": 1, "running": 0},
    ]


def test_a_silent_worker_is_lost_and_its_job_requeued_in_the_same_pass(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id = add_job(session, "vision")
        claim(session, job_id, "distillery-any@gpu1:7", lease_s=3600)  # a long lease: only silence frees it
        heartbeat(session, "distillery-any@gpu1", host="gpu1", gpu_type="any", devices=GPU)
        heartbeat(session, "distillery-any@gpu2", host="gpu2", gpu_type="any", devices=GPU)
    later = utcnow() + timedelta(seconds=31)
    with session_scope(db_url) as session:
        session.get(Worker, "distillery-any@gpu2").last_heartbeat_at = later  # type: ignore[union-attr]
    with session_scope(db_url) as session:
        assert mark_lost(session, timeout_s=30, now=later) == ["distillery-any@gpu1"]
        assert reap_expired(session, now=later) == [job_id]
    with session_scope(db_url) as session:
        assert session.get(Job, job_id).status == "retrying"  # type: ignore[union-attr]
        statuses = {w["id"]: w["status"] for w in pool_view(session)["workers"]}
    assert statuses == {"distillery-any@gpu1": "lost", "distillery-any@gpu2": "online"}


def test_sign_off_and_coming_back(db_url: str) -> None:
    with session_scope(db_url) as session:
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=GPU)
        sign_off(session, "w@h")
        assert session.get(Worker, "w@h").status == "offline"  # type: ignore[union-attr]
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=GPU)
        assert session.get(Worker, "w@h").status == "online"  # type: ignore[union-attr]


def test_a_job_is_stranded_only_while_a_matching_worker_sits_idle(db_url: str) -> None:
    now = utcnow()
    with session_scope(db_url) as session:
        old = add_job(session, "a")
        fresh = add_job(session, "a")
        other = add_job(session, "a", queue="h100")
        for job_id, age in ((old, 600), (fresh, 10), (other, 600)):
            session.get(Job, job_id).published_at = now - timedelta(seconds=age)  # type: ignore[union-attr]
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=GPU)
    with session_scope(db_url) as session:
        assert stranded(session, 300, now=now) == []  # the worker has only just become idle
        session.get(Worker, "w@h").idle_since = now - timedelta(seconds=400)  # type: ignore[union-attr]
    with session_scope(db_url) as session:
        # an idle "any" worker does not serve gpu.h100; the fresh job may still be on its way
        assert [j.id for j in stranded(session, 300, now=now)] == [old]
        claim(session, old, "w@h:1", lease_s=60)
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=GPU)  # busy again
        assert session.get(Worker, "w@h").idle_since is None  # type: ignore[union-attr]
        assert stranded(session, 300, now=now) == []
