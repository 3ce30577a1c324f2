"""Reads of what a job has written so far: its metric rows and its events, in id order after a
cursor (the last row id a reader saw), so that a poll reads only what is new."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from store.models import JobEvent, Metric

MetricRow = Row[int, str, int, int, str, float]
"""id, stage, epoch, step, name, value."""


def metric_rows(
    session: Session,
    job_id: str,
    *,
    after: int,
    limit: int,
    stage: str | None = None,
    names: Sequence[str] | None = None,
) -> Sequence[MetricRow]:
    """Metric rows after ``after``, at most ``limit``."""
    stmt = (
        select(Metric.id, Metric.stage, Metric.epoch, Metric.step, Metric.name, Metric.value)
        .where(Metric.job_id == job_id, Metric.id > after)
        .order_by(Metric.id)
    )
    if stage:
        stmt = stmt.where(Metric.stage == stage)
    if names:
        stmt = stmt.where(Metric.name.in_(names))
    return session.execute(stmt.limit(limit)).all()


def events_after(session: Session, job_id: str, after: int, limit: int) -> list[JobEvent]:
    stmt = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))
