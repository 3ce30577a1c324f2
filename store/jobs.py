"""Job rows as conditional updates, and the queries the jobs domain runs. Functions never commit.

``domain.lifecycle`` decides which state a job may move to, and when; this module makes each move
one conditional update. A transition names the states it may leave, so two actors racing (a
duplicate delivery, a reaper and a late worker) cannot both win: the loser's update matches no row.

Every change bumps ``version`` (the API's ETag) and records a ``JobEvent``; new metric rows and
events bump it too, so a client whose conditional read gets ``304`` knows there is nothing new
to fetch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, bindparam, delete, false, or_, select, update
from sqlalchemy.orm import Session, defer

from store.models import (
    HELD,
    TERMINAL,
    Artifact,
    IdempotencyKey,
    Job,
    JobEvent,
    JobStatus,
    Metric,
    Upload,
    utcnow,
)


def _bump(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(version=Job.version + 1))


def add_event(
    session: Session,
    job_id: str,
    kind: str,
    message: str = "",
    *,
    actor: str | None = None,
    from_status: JobStatus | None = None,
    to_status: JobStatus | None = None,
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
    sources: Collection[JobStatus],
    target: JobStatus,
    *,
    actor: str | None = None,
    message: str = "",
    lease_owner: str | None = None,
    on_host: str | None = None,
    set_lease: tuple[str | None] | None = None,
    lease_expired_at: datetime | None = None,
    **values: Any,
) -> bool:
    """Move a job from one of ``sources`` to ``target`` if it is still there; True if it moved.

    ``lease_owner``, when given, is a guard: it must match, so a worker that lost its lease
    changes nothing. ``on_host``, when given, is one too: the job must be placed on that worker
    host (``Job.placed_on``), so a stale message in another host's queue claims nothing.
    ``set_lease=(owner,)`` writes a new lease owner (``(None,)`` clears it).
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
    if on_host is not None:
        conditions.append(Job.placed_on == on_host)
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


def expired_leases(session: Session, now: datetime) -> Sequence[Job]:
    """Started jobs whose worker has not renewed the lease by ``now`` (the reaper's candidates)."""
    stmt = select(Job).where(
        Job.status.in_(HELD), Job.lease_expires_at.is_not(None), Job.lease_expires_at < now
    )
    return session.scalars(stmt).all()


# ---------------------------------------------------------------- the API's queries


@dataclass(frozen=True)
class JobQuery:
    """A filter of the jobs list: every field that is set must match."""

    teams: Collection[str] | None = None  # None: every team
    statuses: Collection[JobStatus] = ()
    owner: str | None = None
    name: str | None = None  # a substring, case-insensitive
    sweep: str | None = None  # one sweep's trials
    after: tuple[datetime, str] | None = None  # the (created_at, id) of the previous page's last job


class JobKeyRow(NamedTuple):
    """A job of a list page before its row is loaded: enough for the page's ETag."""

    id: str
    status: JobStatus
    version: int
    created_at: datetime


@dataclass(frozen=True)
class KeysShape:
    """Which filters a list query has (and how many teams and statuses it names): its statement,
    built once per shape (``keys_statement``) with its values as bound parameters. The shapes are
    few: teams ``None`` (every team), 0 or 1; up to one of each status; four filters on or off."""

    teams: int | None
    statuses: int
    owner: bool
    name: bool
    sweep: bool
    after: bool


LIKE_ESCAPE = "/"


def keys_request(query: JobQuery, limit: int) -> tuple[KeysShape, dict[str, Any]]:
    """The statement's shape and its parameters for ``query`` (``job_keys``; ``store.loop_reads``
    sends the same statement from the event loop)."""
    teams = None if query.teams is None else sorted(set(query.teams))
    statuses = sorted(set(query.statuses))
    params: dict[str, Any] = {"limit": limit}
    params |= {f"team_{i}": team for i, team in enumerate(teams or ())}
    params |= {f"status_{i}": status for i, status in enumerate(statuses)}
    if query.owner is not None:
        params["owner"] = query.owner
    if query.name:  # a substring: LIKE's own characters match themselves
        params["name"] = "".join(f"{LIKE_ESCAPE}{c}" if c in f"%_{LIKE_ESCAPE}" else c for c in query.name)
    if query.sweep is not None:
        params["sweep"] = query.sweep
    if query.after is not None:
        params["after_created"], params["after_id"] = query.after
    shape = KeysShape(
        teams=None if teams is None else len(teams),
        statuses=len(statuses),
        owner=query.owner is not None,
        name=bool(query.name),
        sweep=query.sweep is not None,
        after=query.after is not None,
    )
    return shape, params


@functools.cache  # bounded by the shapes (above): a few hundred at most
def keys_statement(shape: KeysShape) -> Select[str, JobStatus, int, datetime]:
    """``(id, status, version, created_at)`` of visible jobs, newest first, for ``keys_request``'s
    parameters. Built once per shape: building and keying a statement per request cost the list
    more CPU than the database spends answering it."""
    stmt = (
        select(Job.id, Job.status, Job.version, Job.created_at)
        .where(Job.deleted_at.is_(None))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(bindparam("limit"))
    )
    if shape.teams == 0:  # a team the caller may not see: nothing
        stmt = stmt.where(false())
    elif shape.teams is not None:
        stmt = stmt.where(Job.team.in_([bindparam(f"team_{i}") for i in range(shape.teams)]))
    if shape.statuses:
        stmt = stmt.where(Job.status.in_([bindparam(f"status_{i}") for i in range(shape.statuses)]))
    if shape.owner:
        stmt = stmt.where(Job.owner == bindparam("owner"))
    if shape.name:
        stmt = stmt.where(Job.name.icontains(bindparam("name"), escape=LIKE_ESCAPE))
    if shape.sweep:
        stmt = stmt.where(Job.sweep_id == bindparam("sweep"))
    if shape.after:
        created, last_id = (
            bindparam("after_created", type_=Job.created_at.type),
            bindparam("after_id", type_=Job.id.type),
        )
        stmt = stmt.where(or_(Job.created_at < created, (Job.created_at == created) & (Job.id < last_id)))
    return stmt


def job_keys(session: Session, query: JobQuery, limit: int) -> list[JobKeyRow]:
    """``(id, status, version, created_at)`` of visible jobs, newest first: no row is loaded."""
    shape, params = keys_request(query, limit)
    # a Core statement on the session's connection: no ORM set-up for a query that loads no entity
    rows = session.connection().execute(keys_statement(shape), params)
    return [JobKeyRow._make(row) for row in rows]


@dataclass(frozen=True)
class JobHead:
    """What a conditional read of one job decides on: light columns (``store.reads``)."""

    id: str
    status: JobStatus
    version: int
    team: str | None
    deleted: bool


def jobs_without_spec(session: Session, ids: Collection[str]) -> dict[str, Job]:
    """The rows of a list page, by id; the spec (the largest column) is left unloaded."""
    rows = session.scalars(select(Job).where(Job.id.in_(ids)).options(defer(Job.spec)))
    return {job.id: job for job in rows}


def uploads_at(session: Session, paths: Collection[str]) -> dict[str, Upload]:
    """The uploads stored at these (normalized) paths, by path: what a spec may name."""
    if not paths:
        return {}
    return {row.path: row for row in session.scalars(select(Upload).where(Upload.path.in_(paths)))}


def hide(session: Session, job_id: str) -> bool:
    """Mark a finished job deleted (its row and events stay: the audit trail); False if it is
    live or already deleted (a concurrent request won)."""
    now = utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(TERMINAL), Job.deleted_at.is_(None))
        .values(deleted_at=now, version=Job.version + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def purge_results(session: Session, job_id: str) -> list[str]:
    """Delete a job's artifact and metric rows and its Idempotency-Keys; the artifact locations
    whose files are to go once this is committed."""
    locations = list(session.scalars(select(Artifact.location).where(Artifact.job_id == job_id)))
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    session.execute(delete(Metric).where(Metric.job_id == job_id))
    # its keys too: a retry after a deletion makes a new job rather than naming a gone one
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.job_id == job_id))
    return locations
