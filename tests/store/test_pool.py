"""The pool: heartbeats register hosts, silence marks them lost and frees their jobs at once."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from domain.lifecycle import claim, mark_published, reap_expired
from store.db import session_scope
from store.models import Job, Worker, utcnow
from store.pool import heartbeat, mark_lost, pool_view, release_dispatched, sign_off, stranded
from store.scheduler import Placement

GPU = [{"index": 0, "name": "NVIDIA H100", "memory_mb": 81559.0, "memory_used_mb": 1.0, "utilization": 0.0}]
GPUS = [{**GPU[0], "index": i} for i in range(4)]


def add_job(session: Session, team: str, queue: str = "any", gpus: int = 1) -> str:
    job = Job(name="j", spec={}, team=team, queue=queue, gpus=gpus)
    session.add(job)
    session.flush()
    return job.id


def hand(session: Session, job_id: str, worker: str, *devices: int) -> None:
    """What a dispatcher pass records for a job it hands to ``worker``."""
    mark_published(session, job_id, Placement(worker, devices or (0,)))


def test_heartbeat_registers_and_the_view_shows_which_devices_each_job_holds(db_url: str) -> None:
    with session_scope(db_url) as session:
        heartbeat(session, "distillery-h100-0-1-2-3@gpu1", host="gpu1", gpu_type="h100", devices=GPUS)
        heartbeat(session, "distillery-any@cpu1", host="cpu1", gpu_type="any", devices=[{"name": "cpu"}])
        big, small, sent = (
            add_job(session, "vision", gpus=2),
            add_job(session, "vision"),
            add_job(session, "audio"),
        )
        hand(session, big, "distillery-h100-0-1-2-3@gpu1", 0, 1)
        hand(session, small, "distillery-h100-0-1-2-3@gpu1", 2)
        hand(session, sent, "distillery-h100-0-1-2-3@gpu1", 3)
        assert claim(session, big, "distillery-h100-0-1-2-3@gpu1:4242", lease_s=60) is not None
        assert claim(session, small, "distillery-h100-0-1-2-3@gpu1:4243", lease_s=60) is not None
    with session_scope(db_url) as session:
        view = pool_view(session, visible=lambda team: team == "vision")
    by_id = {w["id"]: w for w in view["workers"]}
    gpu = by_id["distillery-h100-0-1-2-3@gpu1"]
    assert gpu["status"] == "online" and gpu["devices"] == GPUS
    assert (gpu["slots"], gpu["free_slots"]) == (4, 0)  # the job handed over holds its slot too
    assert gpu["job"]["id"] == big  # the first it runs
    assert [(j["id"], j["status"], j["gpus"], j["devices"]) for j in gpu["jobs"]] == [
        (big, "starting", 2, [0, 1]),
        (small, "starting", 1, [2]),
        (None, "queued", 1, [3]),  # another team's: where, not what
    ]
    cpu = by_id["distillery-any@cpu1"]
    assert (cpu["slots"], cpu["free_slots"], cpu["job"], cpu["jobs"]) == (1, 1, None, [])
    assert view["teams"] == [
        {"team": "audio", "queued": 1, "running": 0},
        {"team": "vision", "queued": 0, "running": 2},
    ]


def test_a_host_declares_its_slots(db_url: str) -> None:
    with session_scope(db_url) as session:
        listed = heartbeat(session, "a@h", host="h", gpu_type="any", devices=GPUS)
        declared = heartbeat(session, "b@h", host="h", gpu_type="any", devices=[], slots=3)
        legacy = heartbeat(session, "c@h", host="h", gpu_type="any", devices=[{"name": "cpu"}])
        assert (listed.slots, declared.slots, legacy.slots) == (4, 3, 1)


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
        hand(session, job_id, "distillery-any@gpu1")
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
        job = session.get(Job, job_id)
        assert job is not None and job.status == "retrying"
        assert (job.placed_on, job.devices) == (None, None)  # placed anew when it is handed over again
        statuses = {w["id"]: w["status"] for w in pool_view(session)["workers"]}
    assert statuses == {"distillery-any@gpu1": "lost", "distillery-any@gpu2": "online"}


def test_sign_off_and_coming_back(db_url: str) -> None:
    with session_scope(db_url) as session:
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=GPU)
        sign_off(session, "w@h")
        assert session.get(Worker, "w@h").status == "offline"  # type: ignore[union-attr]
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=GPU)
        assert session.get(Worker, "w@h").status == "online"  # type: ignore[union-attr]


def test_a_job_is_claimed_only_by_the_host_it_was_placed_on(db_url: str) -> None:
    with session_scope(db_url) as session:
        job_id = add_job(session, "a")
        assert claim(session, job_id, "w@h:1", lease_s=60) is None  # not handed over: a stale message
        hand(session, job_id, "w@h", 1)
        assert claim(session, job_id, "other@h:1", lease_s=60) is None
        job = claim(session, job_id, "w@h:1", lease_s=60)
        assert job is not None and job.devices == [1]


def test_a_job_is_stranded_only_while_its_host_has_been_online_all_along(db_url: str) -> None:
    now = utcnow()
    with session_scope(db_url) as session:
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=GPUS)
        heartbeat(session, "gone@h", host="h", gpu_type="any", devices=GPUS)
        old, fresh, elsewhere = add_job(session, "a"), add_job(session, "a"), add_job(session, "a")
        hand(session, old, "w@h", 0)
        hand(session, fresh, "w@h", 1)
        hand(session, elsewhere, "gone@h", 0)
        for job_id, age in ((old, 600), (fresh, 10), (elsewhere, 600)):
            session.get(Job, job_id).published_at = now - timedelta(seconds=age)  # type: ignore[union-attr]
        sign_off(session, "gone@h")
    with session_scope(db_url) as session:
        assert stranded(session, 300, now=now) == []  # the host has only just come online
        for worker_id in ("w@h", "gone@h"):
            session.get(Worker, worker_id).started_at = now - timedelta(seconds=400)  # type: ignore[union-attr]
    with session_scope(db_url) as session:
        # the fresh job may still be on its way; the host of the third is not online: released, not
        # republished
        assert stranded(session, 300, now=now) == [(old, Placement("w@h", (0,)))]
        assert release_dispatched(session) == [elsewhere]
        claim(session, old, "w@h:1", lease_s=60)
        assert stranded(session, 300, now=now) == []
