"""The audit trail: who submitted, cancelled and deleted which job, and when, kept as job events.

Submission is recorded by the API when it stores a job (``submitted``); this module records
cancellations (``cancel``) and deletions (``deleted``), each with the user as ``actor``. A deleted
job keeps its row (hidden from the API: ``deleted_at`` is set) and its events, so the trail
outlives the job; its metrics and artifacts are removed. Functions never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from store.jobs import add_event, request_cancel
from store.models import TERMINAL, Artifact, IdempotencyKey, Job, JobEvent, Metric, utcnow

AUDIT_KINDS = ("submitted", "cancel", "deleted")


def cancel(session: Session, job_id: str, actor: str) -> Job | None:
    """``store.jobs.request_cancel``, recorded with its actor when it took effect."""
    job = request_cancel(session, job_id, actor=actor)
    if job is not None and job.status in ("cancelling", "cancelled"):
        add_event(session, job_id, "cancel", f"cancel requested by {actor}", actor=actor)
    return job


def soft_delete(session: Session, job_id: str, actor: str) -> list[str] | None:
    """Remove a finished job's metrics and artifact rows and hide the job; returns the artifact
    locations to delete once committed, or None if the job is not there to delete (live, or
    deleted by a concurrent request)."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(TERMINAL), Job.deleted_at.is_(None))
        .values(deleted_at=utcnow(), version=Job.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:  # type: ignore[attr-defined]
        return None
    locations = list(session.scalars(select(Artifact.location).where(Artifact.job_id == job_id)))
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    session.execute(delete(Metric).where(Metric.job_id == job_id))
    # its Idempotency-Keys too: a retry after a deletion makes a new job rather than naming a gone one
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id == job_id))
    add_event(session, job_id, "deleted", f"deleted by {actor}", actor=actor)
    return locations


@dataclass(frozen=True)
class AuditEntry:
    event: JobEvent
    job_name: str
    team: str | None


def audit_trail(
    session: Session,
    *,
    teams: Sequence[str] | None,
    actor: str | None = None,
    job_id: str | None = None,
    kinds: Sequence[str] = AUDIT_KINDS,
    after: int = 0,
    limit: int = 100,
) -> list[AuditEntry]:
    """Audit events in order (``teams=None``: every team), deleted jobs' included."""
    stmt = (
        select(JobEvent, Job.name, Job.team)
        .join(Job, Job.id == JobEvent.job_id)
        .where(JobEvent.kind.in_(kinds), JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    if teams is not None:
        stmt = stmt.where(Job.team.in_(teams))
    if actor is not None:
        stmt = stmt.where(JobEvent.actor == actor)
    if job_id is not None:
        stmt = stmt.where(JobEvent.job_id == job_id)
    return [AuditEntry(event, name, team) for event, name, team in session.execute(stmt)]
