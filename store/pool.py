"""The GPU pool as the database sees it: workers, their heartbeats, and what runs where.

Workers register when they start and send a heartbeat every few seconds with their devices and
the job they hold. One that stays silent past the timeout is marked ``lost``, and the lease of
the job it held is ended at once, so the reaper returns that job to the queue without waiting
for the lease to run out. Functions take a session and never commit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from store.jobs import add_event
from store.models import HELD, TERMINAL, WAITING, Job, JobStatus, Worker, utcnow

# What another team may see of a job's progress: how far along, never what it trains.
PUBLIC_PROGRESS = ("stage", "fraction", "eta_s")


def heartbeat(
    session: Session, worker_id: str, *, host: str, gpu_type: str, devices: list[dict[str, Any]]
) -> Worker:
    """Register or refresh a worker; the job it holds is read from the leases it owns."""
    now = utcnow()
    current = session.scalar(
        select(Job.id).where(Job.status.in_(HELD), Job.lease_owner.startswith(f"{worker_id}:")).limit(1)
    )
    worker = session.get(Worker, worker_id)
    if worker is None:
        worker = Worker(id=worker_id, host=host, gpu_type=gpu_type, started_at=now)
        session.add(worker)
    elif worker.status != "online":
        worker.started_at, worker.idle_since = now, None
    worker.idle_since = None if current else (worker.idle_since or now)
    worker.devices, worker.status, worker.current_job_id = devices, "online", current
    worker.last_heartbeat_at = now
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


def stranded(session: Session, older_than_s: float, now: datetime | None = None) -> list[Job]:
    """Queued jobs whose broker message was probably lost (a broker restarted without persistence).

    A job published ``older_than_s`` ago is stranded when a worker of its queue has sat idle all
    that time: with the message in the broker, that worker would have taken it within seconds.
    Republishing is safe (a duplicate delivery finds nothing to claim), and this rule keeps a
    busy pool with a long queue from being flooded with duplicates.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    idle_types = session.scalars(
        select(Worker.gpu_type).where(
            Worker.status == "online", Worker.idle_since.is_not(None), Worker.idle_since < cutoff
        )
    ).all()
    if not idle_types:
        return []
    queues = {*idle_types, "any"}  # every worker also serves gpu.any
    stmt = (
        select(Job)
        .where(Job.status == JobStatus.QUEUED, Job.published_at < cutoff, Job.queue.in_(queues))
        .order_by(Job.priority.desc(), Job.created_at)
    )
    return list(session.scalars(stmt))


def pool_view(session: Session, visible: Callable[[str | None], bool] = lambda _team: True) -> dict[str, Any]:
    """Workers and their devices, the job each runs, and the queue per team and per GPU type.

    A job of a team that is not ``visible`` shows its team, status and how far along it is:
    nothing of its content (name, owner, spec, error) and not its id.
    """
    workers = session.scalars(select(Worker).order_by(Worker.status, Worker.id)).all()
    running = {
        j.id: j for j in session.scalars(select(Job).where(Job.id.in_([w.current_job_id for w in workers])))
    }
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
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "gpu_type": w.gpu_type,
                "status": w.status,
                "devices": w.devices,
                "started_at": w.started_at,
                "last_heartbeat_at": w.last_heartbeat_at,
                "job": _job_brief(running.get(w.current_job_id or ""), visible),
            }
            for w in workers
        ],
        "teams": [{"team": k, **v} for k, v in sorted(teams.items())],
        "queues": [{"queue": k, **v} for k, v in sorted(queues.items())],
    }


def _job_brief(job: Job | None, visible: Callable[[str | None], bool]) -> dict[str, Any] | None:
    if job is None:
        return None
    if not visible(job.team):
        progress = {k: v for k, v in (job.progress or {}).items() if k in PUBLIC_PROGRESS}
        return dict.fromkeys(("id", "name", "owner"), None) | {
            "team": job.team,
            "status": job.status,
            "progress": progress or None,
        }
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "team": job.team,
        "status": job.status,
        "progress": job.progress,
    }
