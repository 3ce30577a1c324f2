"""Jobs as their owners see them: submit (idempotent, under the team's quota), list, get, cancel,
delete; another team's job or a deleted one is as absent as one that never existed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.errors import (
    IdempotencyKeyReusedError,
    JobFinishedError,
    JobLiveError,
    NotFoundError,
    QuotaExceededError,
)
from core.spec import JobSpec
from domain import jobs
from domain.lifecycle import claim, mark_published
from store.db import session_scope
from store.identity import Caller, create_team
from store.jobs import transition
from store.models import OWNED, Artifact, Job, JobEvent, JobStatus
from store.scheduler import Placement
from store.settings import Settings

ANA = Caller(user="ana", team="vision", role="member", token_id="t1")
BO = Caller(user="bo", team="audio", role="member", token_id="t2")
ROOT = Caller(user="root", team="ops", role="admin", token_id="t0")
TINY = {
    "data": {"kind": "mnist1d", "train_limit": 300},
    "teacher": {"model": {"kind": "cnn1d", "channels": 8}, "train": {"epochs": 2}},
    "student": {"model": {"kind": "mlp", "hidden": [16]}},
    "distill": {"epochs": 3},
}


def spec(name: str = "j", **changes: object) -> JobSpec:
    return JobSpec.model_validate({**TINY, "name": name, **changes})


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    with session_scope(db_url) as session:
        create_team(session, "vision", max_queued=3)
        create_team(session, "audio")
    return Settings(home=tmp_path, database_url=db_url, max_attempts=2)


def submit(settings: Settings, caller: Caller = ANA, name: str = "j", key: str | None = None) -> Job:
    with session_scope(settings.db_url) as session:
        return jobs.submit(session, caller, spec(name), settings, body_hash=name, idempotency_key=key).job


def finish(db_url: str, job_id: str) -> None:
    with session_scope(db_url) as session:
        mark_published(session, job_id, Placement("w", (0,)))
        assert claim(session, job_id, "w:1", lease_s=60) is not None
        assert transition(session, job_id, OWNED, JobStatus.SUCCEEDED)


def kinds(db_url: str, job_id: str) -> list[str]:
    with session_scope(db_url) as session:
        return list(
            session.scalars(select(JobEvent.kind).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        )


def test_submit_commits_the_job_then_wakes_the_dispatcher(settings: Settings) -> None:
    seen: list[JobStatus | None] = []

    def wake() -> None:  # another session must find the job: the commit came first
        with session_scope(settings.db_url) as other:
            seen.append(other.scalar(select(Job.status).where(Job.name == "first")))

    with session_scope(settings.db_url) as session:
        high = spec("first", resources={"gpu_type": "t4", "priority": "high"})
        done = jobs.submit(session, ANA, high, settings, body_hash="h", wake=wake)
    assert seen == [JobStatus.QUEUED] and not done.replayed
    job = done.job
    assert (job.owner, job.team, job.queue, job.priority, job.max_attempts) == ("ana", "vision", "t4", 1, 2)
    assert job.spec["spec_version"] == 1 and kinds(settings.db_url, job.id) == ["submitted"]


def test_an_idempotency_key_replays_its_job_and_refuses_another_body(settings: Settings) -> None:
    first = submit(settings, key="k")
    with session_scope(settings.db_url) as session:
        again = jobs.submit(session, ANA, spec(), settings, body_hash="j", idempotency_key="k")
        assert again.replayed and again.job.id == first.id
        with pytest.raises(IdempotencyKeyReusedError) as refused:
            jobs.submit(session, ANA, spec(), settings, body_hash="other", idempotency_key="k")
    assert refused.value.status == 422 and refused.value.errors[0].field == "Idempotency-Key"
    assert submit(settings, key="k2").id != first.id  # another key, another job
    assert submit(settings, BO, key="k").id != first.id  # keys are per user


def test_a_key_committed_meanwhile_answers_as_its_replay(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with one key race past the replay check: the loser's commit fails on the key,
    and it answers with the winner's job."""
    checks = jobs.check_spec
    winner: list[Job] = []

    def racing(*args: Any) -> JobSpec:
        monkeypatch.setattr(jobs, "check_spec", checks)
        winner.append(submit(settings, key="k"))  # commits first, in a session of its own
        return checks(*args)  # the spec to store, as check_spec gives it

    monkeypatch.setattr(jobs, "check_spec", racing)
    with session_scope(settings.db_url) as session:
        late = jobs.submit(session, ANA, spec(), settings, body_hash="j", idempotency_key="k")
    assert late.replayed and late.job.id == winner[0].id
    with session_scope(settings.db_url) as session:
        assert len(session.scalars(select(Job.id)).all()) == 1


def test_a_full_queue_refuses_and_stores_nothing(settings: Settings) -> None:
    for name in "abc":
        submit(settings, name=name)
    with pytest.raises(QuotaExceededError) as refused:
        submit(settings, name="d")
    assert refused.value.type == "team-queue-full" and refused.value.status == 409
    with session_scope(settings.db_url) as session:
        assert set(session.scalars(select(Job.name))) == {"a", "b", "c"}


def test_a_job_is_visible_to_its_team_and_admins_until_deleted(settings: Settings) -> None:
    job = submit(settings)
    with session_scope(settings.db_url) as session:
        assert jobs.get_visible(session, ANA, job.id).id == job.id
        assert jobs.get_visible(session, ROOT, job.id).id == job.id
        for caller, job_id in ((BO, job.id), (ANA, "nope")):
            with pytest.raises(NotFoundError, match=f"job '{job_id}' does not exist"):
                jobs.get_visible(session, caller, job_id)
    finish(settings.db_url, job.id)
    with session_scope(settings.db_url) as session:
        jobs.delete(session, ANA, jobs.get_visible(session, ANA, job.id), Files())  # type: ignore[arg-type]
    with session_scope(settings.db_url) as session, pytest.raises(NotFoundError):
        jobs.get_visible(session, ROOT, job.id)


def listing(db_url: str, caller: Caller, limit: int = 50, **wanted: object) -> jobs.Listing:
    with session_scope(db_url) as session:
        return jobs.list_jobs(session, caller, jobs.JobFilter(**wanted), limit)  # type: ignore[arg-type]


def names(db_url: str, found: jobs.Listing) -> list[str]:
    with session_scope(db_url) as session:
        return [job.name for job, _wait in found.rows(session)]


def test_the_list_shows_the_callers_team_newest_first_page_by_page(settings: Settings) -> None:
    url = settings.db_url
    for name in ("v1", "v2"):
        submit(settings, name=name)
    submit(settings, BO, name="a1")
    assert names(url, listing(url, ANA)) == ["v2", "v1"]
    assert names(url, listing(url, ANA, team="audio")) == []  # another team's: nothing
    assert names(url, listing(url, ROOT)) == ["a1", "v2", "v1"]
    assert names(url, listing(url, ROOT, team="audio")) == ["a1"]
    assert names(url, listing(url, ROOT, name="V")) == ["v2", "v1"]  # a substring, any case
    assert names(url, listing(url, ROOT, owner="bo")) == ["a1"]
    first = listing(url, ROOT, limit=2)
    assert first.more and names(url, first) == ["a1", "v2"]
    rest = listing(url, ROOT, limit=2, after=first.next_after)
    assert not rest.more and rest.next_after is None and names(url, rest) == ["v1"]
    finish(url, first.keys[0].id)
    assert names(url, listing(url, ROOT, statuses=[JobStatus.SUCCEEDED])) == ["a1"]


def test_the_page_tag_moves_with_any_change_on_the_page(settings: Settings) -> None:
    url = settings.db_url
    job = submit(settings, name="v1")
    tag = listing(url, ANA).tag
    assert listing(url, ANA).tag == tag  # nothing changed
    submit(settings, BO, name="a1")
    assert listing(url, ANA).tag == tag  # another team's job is not on this page
    with session_scope(url) as session:
        jobs.cancel(session, ANA, jobs.get_visible(session, ANA, job.id))
    assert listing(url, ANA).tag != tag


def test_cancel_waiting_started_and_finished_jobs(settings: Settings) -> None:
    url = settings.db_url
    waiting, started, done = (submit(settings, name=n).id for n in ("w", "s", "d"))
    with session_scope(url) as session:
        mark_published(session, started, Placement("w", (0,)))
        assert claim(session, started, "w:1", lease_s=60) is not None
    finish(url, done)
    with session_scope(url) as session:
        cancelled = jobs.cancel(session, ANA, jobs.get_visible(session, ANA, waiting))
        assert cancelled.status == JobStatus.CANCELLED and cancelled.error == {
            "type": "cancelled",
            "message": "cancelled before it started",
        }
        assert (
            jobs.cancel(session, ANA, jobs.get_visible(session, ANA, started)).status == JobStatus.CANCELLING
        )
        with pytest.raises(JobFinishedError, match=f"job {done} is already succeeded"):
            jobs.cancel(session, ANA, jobs.get_visible(session, ANA, done))
    assert kinds(url, waiting) == ["submitted", "status", "cancel"]  # the audit trail names the actor


def test_a_cancel_that_loses_the_race_with_the_end_is_refused(settings: Settings) -> None:
    job = submit(settings)
    with session_scope(settings.db_url) as session:
        stale = jobs.get_visible(session, ANA, job.id)
        finish(settings.db_url, job.id)  # the job ends after the request read it
        with pytest.raises(JobFinishedError, match="is already succeeded"):
            jobs.cancel(session, ANA, stale)


class Files:
    """An artifact store that records the deletions, and whether the rows were gone by then."""

    def __init__(self, db_url: str | None = None) -> None:
        self.db_url = db_url
        self.deleted: list[str] = []
        self.rows_left: list[int] = []

    def delete(self, location: str) -> None:
        if location == "broken":
            raise OSError("the disk is gone")
        self.deleted.append(location)
        if self.db_url:
            with session_scope(self.db_url) as other:
                self.rows_left.append(len(other.scalars(select(Artifact.id)).all()))


def test_delete_refuses_a_live_job_and_removes_files_after_the_commit(settings: Settings) -> None:
    url = settings.db_url
    job = submit(settings)
    files = Files(url)
    with session_scope(url) as session, pytest.raises(JobLiveError, match="is queued: cancel it first"):
        jobs.delete(session, ANA, jobs.get_visible(session, ANA, job.id), files)
    finish(url, job.id)
    with session_scope(url) as session:
        for name, location in (("a", "broken"), ("b", "jobs/x/b.pt")):
            session.add(
                Artifact(job_id=job.id, name=name, filename=name, size=1, sha256="0", location=location)
            )
    with session_scope(url) as session:
        row = jobs.get_visible(session, ANA, job.id)
        jobs.delete(session, ANA, row, files)  # a file that cannot be deleted is only logged
        assert files.deleted == ["jobs/x/b.pt"] and files.rows_left == [0]
        with pytest.raises(NotFoundError):  # a second delete, as a concurrent request would
            jobs.delete(session, ANA, row, files)
    assert kinds(url, job.id)[-1] == "deleted"
