"""Kept stages: a team's finished teachers and baselines, found by key, and the jobs using them.

Queries only; the caller commits. A stage is kept while a job that is not deleted uses it (the job
that trained it, and every job that reused it): ``release`` forgets a deleted job's uses and
returns the stages nobody uses any more, whose files the caller then removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import Job, StageArtifact, StageUse


def team_of(session: Session, job_id: str) -> str:
    """The job's team as kept stages are keyed ("" for a job without one)."""
    job = session.get(Job, job_id)
    return (job.team if job else None) or ""


def find(session: Session, team: str, key: str) -> StageArtifact | None:
    return session.scalar(select(StageArtifact).where(StageArtifact.team == team, StageArtifact.key == key))


def used_by(session: Session, job_id: str, stage: str) -> StageArtifact | None:
    """The kept stage named ``stage`` that job ``job_id`` trained or reused, if any."""
    return session.scalar(
        select(StageArtifact)
        .join(StageUse, StageUse.stage_id == StageArtifact.id)
        .where(StageUse.job_id == job_id, StageArtifact.stage == stage)
    )


def use(session: Session, stage_id: str, job_id: str) -> None:
    """Record that ``job_id`` uses the stage (once; a retried attempt records nothing new)."""
    if session.get(StageUse, (stage_id, job_id)) is None:
        session.add(StageUse(stage_id=stage_id, job_id=job_id))
        session.flush()


def keep(
    session: Session, *, team: str, key: str, stage: str, job_id: str, files: dict[str, Any]
) -> tuple[StageArtifact, bool]:
    """Keep a finished stage and record its trainer as a user; (the row, whether it is new).
    When the team already keeps a stage with this key (two identical jobs trained it at once),
    that one stays and the caller's files are surplus."""
    if (found := find(session, team, key)) is None:
        try:
            with session.begin_nested():
                found = StageArtifact(team=team, key=key, stage=stage, job_id=job_id, files=files)
                session.add(found)
        except IntegrityError:
            found = find(session, team, key)
            assert found is not None
        else:
            use(session, found.id, job_id)
            return found, True
    use(session, found.id, job_id)
    return found, False


def release(session: Session, job_id: str) -> Sequence[StageArtifact]:
    """Forget ``job_id``'s uses (it is being deleted); delete and return the stages left unused,
    none of whose users is a job that is not deleted."""
    candidates = list(session.scalars(select(StageUse.stage_id).where(StageUse.job_id == job_id)))
    session.execute(delete(StageUse).where(StageUse.job_id == job_id))
    if not candidates:
        return []
    live_use = (
        select(StageUse.stage_id)
        .join(Job, Job.id == StageUse.job_id)
        .where(StageUse.stage_id == StageArtifact.id, Job.deleted_at.is_(None))
    )
    gone = list(
        session.scalars(select(StageArtifact).where(StageArtifact.id.in_(candidates), ~exists(live_use)))
    )
    for row in gone:
        session.delete(row)
    session.flush()
    return gone
