"""The pool as the database sees it: worker hosts, their heartbeats, and what runs where.

A worker host registers when it starts and sends a heartbeat every few seconds with its slots and
devices and the jobs it holds. One that stays silent past the timeout is marked ``lost``, and the
leases of the jobs it held are ended at once, so the reaper returns those jobs to the queue
without waiting for the leases to run out; the jobs handed to it and not yet taken go back to
waiting too (``release_dispatched``), to be placed on another host. Functions take a session and
never commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, defer

from store.jobs import add_event
from store.models import HELD, TERMINAL, WAITING, Job, Worker, as_utc, utcnow
from store.scheduler import IS_DISPATCHED, Placement, slot_indices

# What another team may see of a job's progress: how far along, never what it trains.
PUBLIC_PROGRESS = ("stage", "fraction", "eta_s")


def heartbeat(
    session: Session,
    worker_id: str,
    *,
    host: str,
    gpu_type: str,
    devices: list[dict[str, Any]],
    slots: int | None = None,
) -> Worker:
    """Register or refresh a worker host; the jobs it holds are read from the leases it owns.

    ``slots``: how many jobs' worth of devices it has (default: the devices listed with an
    ``index``, or one); ``devices`` lists them with their indices (``store.scheduler.slot_indices``).
    """
    now = utcnow()
    current = session.scalar(
        select(Job.id)
        .where(Job.status.in_(HELD), Job.lease_owner.startswith(f"{worker_id}:"))
        .order_by(Job.started_at, Job.id)
        .limit(1)
    )
    worker = session.get(Worker, worker_id)
    if worker is None:
        worker = Worker(id=worker_id, host=host, gpu_type=gpu_type, started_at=now)
        session.add(worker)
    elif worker.status != "online":
        worker.started_at, worker.idle_since = now, None
    worker.idle_since = None if current else (worker.idle_since or now)
    worker.slots = (
        slots if slots is not None else (sum(isinstance(d.get("index"), int) for d in devices) or 1)
    )
    worker.devices, worker.status, worker.current_job_id = devices, "online", current
    worker.gpu_type, worker.last_heartbeat_at = gpu_type, now
    session.flush()
    return worker


def sign_off(session: Session, worker_id: str) -> None:
    """A worker that stops cleanly."""
    session.execute(
        update(Worker).where(Worker.id == worker_id).values(status="offline", current_job_id=None)
    )


def mark_lost(session: Session, timeout_s: float, now: datetime | None = None) -> list[str]:
    """Online workers silent for ``timeout_s``: lost; the leases they held end now."""
    now = now or utcnow()
    silent = session.scalars(
        select(Worker).where(
            Worker.status == "online", Worker.last_heartbeat_at < now - timedelta(seconds=timeout_s)
        )
    ).all()
    for worker in silent:
        worker.status = "lost"
        held = session.scalars(
            select(Job).where(Job.status.in_(HELD), Job.lease_owner.startswith(f"{worker.id}:"))
        )
        for job in held:
            job.lease_expires_at = now - timedelta(microseconds=1)
            add_event(session, job.id, "log", f"worker {worker.id} lost: no heartbeat for {timeout_s:.0f}s")
    session.flush()
    return [w.id for w in silent]


def release_dispatched(session: Session) -> list[str]:
    """Jobs handed to a host that is no longer online (lost, or stopped) and not taken: back to
    waiting, their placement cleared, so the next dispatcher pass places them on another host.

    Their message stays in that host's queue; if the host comes back and reads it, its claim
    finds the job placed elsewhere (or on nothing) and does nothing.
    """
    online = select(Worker.id).where(Worker.status == "online")
    orphans = session.execute(
        select(Job.id, Job.placed_on).where(
            IS_DISPATCHED, or_(Job.placed_on.is_(None), Job.placed_on.not_in(online))
        )
    ).all()
    released = []
    for job_id, placed_on in orphans:
        stmt = (
            update(Job)
            .where(Job.id == job_id, IS_DISPATCHED, Job.placed_on.is_not_distinct_from(placed_on))
            .values(
                published_at=None, placed_on=None, devices=None, version=Job.version + 1, updated_at=utcnow()
            )
            .execution_options(synchronize_session=False)
        )
        if session.execute(stmt).rowcount == 1:  # type: ignore[attr-defined]
            add_event(
                session,
                job_id,
                "log",
                f"{placed_on or 'its host'} is not online: back to the queue",
                bump=False,
            )
            released.append(job_id)
    return released


def stranded(
    session: Session, older_than_s: float, now: datetime | None = None
) -> list[tuple[str, Placement]]:
    """Dispatched jobs whose broker message was probably lost (a broker restarted without
    persistence), each with the placement to publish it to again.

    A job handed to a host ``older_than_s`` ago is stranded when that host has been online all
    that time: the scheduler only hands a host what it has free slots (and so a free worker
    process) for, so with the message in its queue the host would have taken it within seconds.
    Republishing is safe: a duplicate delivery finds nothing to claim. A job whose host is not
    online is not stranded but released (``release_dispatched``).
    """
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    stmt = (
        select(Job.id, Job.placed_on, Job.devices)
        .join(Worker, Worker.id == Job.placed_on)
        .where(
            IS_DISPATCHED,
            Job.published_at < cutoff,
            Worker.status == "online",
            Worker.started_at < cutoff,
        )
        .order_by(Job.priority.desc(), Job.created_at)
    )
    rows = session.execute(stmt).all()
    return [(job_id, Placement(worker or "", tuple(devices or ()))) for job_id, worker, devices in rows]


def pool_view(session: Session, visible: Callable[[str | None], bool] = lambda _team: True) -> dict[str, Any]:
    """Worker hosts with their slots and devices, the jobs each holds and on which device indices,
    and the queue per team and per GPU type.

    A job of a team that is not ``visible`` shows its team, status, devices and how far along it
    is: nothing of its content (name, owner, spec, error) and not its id.
    """
    workers = session.scalars(select(Worker).order_by(Worker.status, Worker.id)).all()
    held = _jobs_by_worker(session)
    counts = session.execute(
        select(Job.team, Job.queue, Job.status, func.count())
        .where(Job.status.not_in(TERMINAL))
        .group_by(Job.team, Job.queue, Job.status)
    ).all()
    teams: dict[str, dict[str, int]] = {}
    queues: dict[str, dict[str, int]] = {}
    for team, queue, status, n in counts:
        bucket = "queued" if status in WAITING else "running"
        for table, key in ((teams, team or "default"), (queues, queue)):
            row = table.setdefault(key, {"queued": 0, "running": 0})
            row[bucket] += n
    return {
        "workers": [_worker_view(w, held.get(w.id, []), visible) for w in workers],
        "teams": [{"team": k, **v} for k, v in sorted(teams.items())],
        "queues": [{"queue": k, **v} for k, v in sorted(queues.items())],
    }


def _jobs_by_worker(session: Session) -> dict[str, list[Job]]:
    """The jobs that hold slots (started, or handed over and not yet taken), by the host they
    were placed on (or, for a job started before placements were recorded, its lease's host)."""
    rows = session.scalars(
        select(Job)
        .options(defer(Job.spec), defer(Job.report))
        .where(or_(Job.status.in_(HELD), IS_DISPATCHED), Job.deleted_at.is_(None))
    )
    by_worker: dict[str, list[Job]] = defaultdict(list)
    for job in sorted(rows, key=_started_first):
        owner = job.placed_on or (job.lease_owner or "").rsplit(":", 1)[0]
        if owner:
            by_worker[owner].append(job)
    return by_worker


def _started_first(job: Job) -> tuple[bool, datetime, str]:
    """Started jobs first, by start; then those handed over, by hand-over."""
    return job.status not in HELD, as_utc(job.started_at or job.published_at or job.created_at), job.id


def _worker_view(worker: Worker, jobs: list[Job], visible: Callable[[str | None], bool]) -> dict[str, Any]:
    taken = {d for job in jobs for d in job.devices or ()}
    free = [i for i in slot_indices(worker.slots, worker.devices or []) if i not in taken]
    running = [job for job in jobs if job.status in HELD]
    return {
        "id": worker.id,
        "host": worker.host,
        "gpu_type": worker.gpu_type,
        "status": worker.status,
        "slots": worker.slots,
        "free_slots": len(free) if worker.status == "online" else 0,
        "devices": worker.devices,
        "started_at": worker.started_at,
        "last_heartbeat_at": worker.last_heartbeat_at,
        "job": _job_brief(running[0], visible) if running else None,
        "jobs": [_job_brief(job, visible) for job in jobs],
    }


def _job_brief(job: Job, visible: Callable[[str | None], bool]) -> dict[str, Any]:
    where = {"gpus": job.gpus, "devices": job.devices}  # what it holds: no secret of its team's
    if not visible(job.team):
        progress = {k: v for k, v in (job.progress or {}).items() if k in PUBLIC_PROGRESS}
        return dict.fromkeys(("id", "name", "owner"), None) | {
            "team": job.team,
            "status": job.status,
            "progress": progress or None,
            **where,
        }
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "team": job.team,
        "status": job.status,
        "progress": job.progress,
        **where,
    }
