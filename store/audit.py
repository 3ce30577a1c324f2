"""The audit trail: who submitted, cancelled and deleted which job, and when, kept as job events.

``domain.jobs`` records them with the user as ``actor``: ``submitted`` when it stores a job,
``cancel`` and ``deleted``. A deleted job keeps its row (hidden from the API: ``deleted_at`` is
set) and its events, so the trail outlives the job. Functions never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Job, JobEvent

AUDIT_KINDS = ("submitted", "cancel", "deleted")


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
