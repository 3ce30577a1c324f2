"""The job lifecycle as conditional updates (DESIGN.md §4). Functions take a session and never commit.

    queued -> starting -> running -> succeeded | failed
    queued | starting | running | retrying -> cancelling -> cancelled   (queued/retrying: at once)
    starting | running -> retrying -> queued                            (worker lost, attempts left)

Every change bumps ``version`` (the API's ETag) and records a ``JobEvent``; new metric rows and
events bump it too, so a client whose conditional read gets ``304`` knows there is nothing new
to fetch. A transition names
the states it may leave, so two actors racing (a duplicate delivery, a reaper and a late worker)
cannot both win: the loser's update matches no row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.models import TERMINAL, Job, JobEvent, Metric, utcnow

WAITING = ("queued", "retrying")


def _bump(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(version=Job.version + 1))


def add_event(
    session: Session,
    job_id: str,
    kind: str,
    message: str = "",
    *,
    actor: str | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    bump: bool = True,
) -> None:
    """Record an event; ``bump=False`` for a caller whose own update already moved the version."""
    session.add(
        JobEvent(
            job_id=job_id,
            kind=kind,
            message=message,
            actor=actor,
            from_status=from_status,
            to_status=to_status,
        )
    )
    if bump:
        _bump(session, job_id)


def add_event_once(
    session: Session, job_id: str, kind: str, message: str, *, at: datetime, actor: str | None = None
) -> bool:
    """Record an event its writer may replay (a commit whose outcome it never learnt); True if new.

    The writer's own timestamp, unique per writer, names the event: a replay finds it written.
    """
    written = select(JobEvent.id).where(
        JobEvent.job_id == job_id,
        JobEvent.at == at,
        JobEvent.kind == kind,
        JobEvent.actor == actor,
        JobEvent.message == message,
    )
    if session.scalar(written.limit(1)) is not None:
        return False
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, actor=actor, at=at))
    _bump(session, job_id)
    return True


def transition(
    session: Session,
    job_id: str,
    sources: Sequence[str],
    target: str,
    *,
    actor: str | None = None,
    message: str = "",
    lease_owner: str | None = None,
    set_lease: tuple[str | None] | None = None,
    lease_expired_at: datetime | None = None,
    **values: Any,
) -> bool:
    """Move a job from one of ``sources`` to ``target`` if it is still there; True if it moved.

    ``lease_owner``, when given, is a guard: it must match, so a worker that lost its lease
    changes nothing. ``set_lease=(owner,)`` writes a new lease owner (``(None,)`` clears it).
    ``lease_expired_at``, when given, requires the lease to have expired by then (the reaper's guard
    against a renewal that lands between its query and its update).
    """
    if set_lease is not None:
        values["lease_owner"] = set_lease[0]
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status not in sources:
        return False
    conditions = [Job.id == job_id, Job.status.in_(sources)]
    if lease_owner is not None:
        conditions.append(Job.lease_owner == lease_owner)
    if lease_expired_at is not None:
        conditions.append(Job.lease_expires_at < lease_expired_at)
    now = utcnow()
    stmt = (
        update(Job)
        .where(*conditions)
        .values(status=target, version=Job.version + 1, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_event(
        session, job_id, "status", message, actor=actor, from_status=job.status, to_status=target, bump=False
    )
    session.flush()
    session.refresh(job)
    return True


def touch(session: Session, job_id: str, *, lease_owner: str | None = None, **values: Any) -> bool:
    """Update fields of a live job without changing its status (progress, lease)."""
    conditions = [Job.id == job_id, Job.status.not_in(TERMINAL)]
    if lease_owner is not None:
        conditions.append(Job.lease_owner == lease_owner)
    stmt = (
        update(Job)
        .where(*conditions)
        .values(version=Job.version + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the worker's side


def claim(session: Session, job_id: str, worker: str, lease_s: float) -> Job | None:
    """Take a queued (or retrying) job for ``worker``; None if someone else has it or it is over."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    moved = transition(
        session,
        job_id,
        ("queued", "retrying"),
        "starting",
        actor=worker,
        message=f"claimed by {worker}",
        attempt=Job.attempt + 1,
        set_lease=(worker,),
        lease_expires_at=utcnow() + timedelta(seconds=lease_s),
        started_at=job.started_at or utcnow(),
    )
    return session.get(Job, job_id) if moved else None


def renew_lease(session: Session, job_id: str, worker: str, lease_s: float) -> bool:
    return touch(session, job_id, lease_owner=worker, lease_expires_at=utcnow() + timedelta(seconds=lease_s))


def record_metrics(
    session: Session, job_id: str, stage: str, epoch: int, step: int, values: dict[str, float]
) -> None:
    """Insert one epoch's values; a replayed (stage, epoch, step, name) overwrites, never duplicates."""
    # a non-finite value (a diverging epoch) cannot be stored in every database: it is left out
    values = {k: v for k, v in values.items() if math.isfinite(v)}
    rows = [
        dict(job_id=job_id, stage=stage, epoch=epoch, step=step, name=k, value=float(v))
        for k, v in values.items()
    ]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(Metric).values(rows)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(Metric).values(rows)  # type: ignore[assignment]
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "stage", "epoch", "step", "name"], set_={"value": stmt.excluded.value}
    )
    session.execute(stmt)
    _bump(session, job_id)


# ---------------------------------------------------------------- the dispatcher's side


def mark_published(session: Session, job_id: str) -> None:
    """After a successful publish: the job holds a slot of the pool (``store.scheduler``).

    A retrying job becomes queued again. The dispatcher calls it in the transaction that holds
    ``store.locks.DISPATCH``, so the next pass sees the slot taken; for a job published again
    (its message was lost) it only moves ``published_at``.
    """
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return
    again = job.status == "queued" and job.published_at is not None
    if job.status == "retrying":
        transition(session, job_id, ("retrying",), "queued", message="requeued", published_at=utcnow())
    else:
        touch(session, job_id, published_at=utcnow())
    what = "published again (the broker lost it)" if again else "handed to the pool"
    add_event(session, job_id, "dispatched", f"{what}: queue gpu.{job.queue}")


def reap_expired(session: Session, now: datetime | None = None) -> list[str]:
    """Jobs whose worker stopped renewing its lease: back to the queue while attempts remain."""
    now = now or utcnow()
    stmt = select(Job).where(
        Job.status.in_(("starting", "running", "cancelling")),
        Job.lease_expires_at.is_not(None),
        Job.lease_expires_at < now,
    )
    reaped = []
    for job in session.scalars(stmt).all():
        sources = (job.status,)
        note = f"worker {job.lease_owner} lost (lease expired)"
        if job.status == "cancelling":
            done = transition(
                session,
                job.id,
                sources,
                "cancelled",
                message=note,
                finished_at=now,
                lease_expired_at=now,  # unless it was renewed meanwhile
                set_lease=(None,),
                error={"type": "cancelled", "message": "cancelled; the worker was lost"},
            )
        elif job.attempt < job.max_attempts:
            done = transition(
                session,
                job.id,
                sources,
                "retrying",
                message=note + "; will retry",
                published_at=None,
                lease_expired_at=now,  # unless it was renewed meanwhile
                set_lease=(None,),
                lease_expires_at=None,
            )
        else:
            done = transition(
                session,
                job.id,
                sources,
                "failed",
                message=note,
                finished_at=now,
                lease_expired_at=now,  # unless it was renewed meanwhile
                set_lease=(None,),
                error={"type": "worker_lost", "message": f"{note}; {job.attempt} attempt(s) used"},
            )
        if done:
            reaped.append(job.id)
    return reaped


# ---------------------------------------------------------------- the API's side


def request_cancel(session: Session, job_id: str, actor: str | None = None) -> Job | None:
    """Queued jobs are cancelled at once; running ones are asked to stop (the worker polls)."""
    now = utcnow()
    if transition(
        session,
        job_id,
        ("queued", "retrying"),
        "cancelled",
        actor=actor,
        message="cancelled",
        finished_at=now,
        cancel_requested_at=now,
        error={"type": "cancelled", "message": "cancelled before it started"},
    ):
        return session.get(Job, job_id)
    transition(
        session,
        job_id,
        ("starting", "running"),
        "cancelling",
        actor=actor,
        message="cancellation requested",
        cancel_requested_at=now,
    )
    return session.get(Job, job_id)
