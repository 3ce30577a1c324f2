"""The pool as a caller sees it: everything, but of another team's job only how far along it is."""

from __future__ import annotations

from domain import pool
from domain.lifecycle import claim, mark_published
from store.db import session_scope
from store.identity import Caller
from store.models import Job
from store.pool import heartbeat
from store.scheduler import Placement


def test_another_teams_job_shows_its_progress_only(db_url: str) -> None:
    with session_scope(db_url) as session:
        job = Job(
            name="secret", spec={}, team="vision", progress={"stage": "student", "fraction": 0.5, "loss": 1}
        )
        session.add(job)
        session.flush()
        job_id = job.id
        mark_published(session, job_id, Placement("w@gpu1", (0,)))
        assert claim(session, job_id, "w@gpu1:1", lease_s=60) is not None
        heartbeat(session, "w@gpu1", host="gpu1", gpu_type="any", devices=[])
    with session_scope(db_url) as session:
        own = pool.view(session, Caller(user="ana", team="vision", role="member", token_id="t"))
        other = pool.view(session, Caller(user="bo", team="audio", role="member", token_id="t"))
    assert own["workers"][0]["job"]["id"] == job_id and own["workers"][0]["job"]["name"] == "secret"
    assert other["workers"][0]["job"] == {
        "id": None, "name": None, "owner": None, "team": "vision", "status": "starting",
        "progress": {"stage": "student", "fraction": 0.5}, "gpus": 1, "devices": [0],
    }  # fmt: skip
    assert other["teams"] == own["teams"] == [{"team": "vision", "queued": 0, "running": 1}]
