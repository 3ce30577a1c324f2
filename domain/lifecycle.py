"""The job lifecycle (DESIGN.md §4): who may move a job, from where, to where. Functions never commit.

    queued -> starting -> running -> succeeded | failed
    queued | starting | running | retrying -> cancelling -> cancelled   (queued/retrying: at once)
    starting | running -> retrying -> queued                            (worker lost, attempts left)
    starting | running -> pruned                                        (a sweep's pruner stopped it)

Each move is one conditional update (``store.jobs.transition``): it names the states it may
leave, and a worker's moves also name the lease owner, so of two actors racing (a duplicate
delivery, the reaper and a late worker) only one wins; the loser changes nothing. A job is handed
over with a placement (a host and its device indices, ``mark_published``), only that host may
claim it, and it loses the placement when it goes back to waiting (``reap_expired``). The worker
(``worker.tasks``, ``worker.sink``, ``worker.lease``) and the dispatcher (``worker.dispatcher``)
call these; the API's cancel goes through ``domain.jobs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.errors import CancelledError, WorkerLostError
from store.jobs import add_event, expired_leases, touch, transition
from store.models import HELD, OWNED, WAITING, Artifact, Job, JobStatus, as_utc, utcnow
from store.scheduler import Placement

PRUNED_TYPE = "pruned"  # ``Job.error.type`` of a pruned trial


def _error(error_type: str, message: str) -> dict[str, str]:
    """What ``Job.error`` holds: the error class's ``type`` and a message for people."""
    return {"type": error_type, "message": message}


# ---------------------------------------------------------------- the worker's side


def claim(session: Session, job_id: str, worker: str, lease_s: float) -> Job | None:
    """Take a job handed to ``worker``'s host (``<worker id>:<pid>``); None if it is placed on
    another host or on none (a stale message), if someone else has it, or if it is over. The row
    tells the caller which devices of its host to use (``Job.devices``).

    The message may arrive before the dispatcher's pass commits the placement (it publishes, then
    stores the queue's places, then commits). The row is read ``FOR UPDATE`` first: that waits for
    the pass's lock on it, so the claim sees the placement. Without it, PostgreSQL's ``UPDATE ...
    WHERE placed_on = <this host>`` skips a row whose committed version is not placed yet rather
    than wait for it, and the job stayed handed over and untaken until the lost-message republish."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        return None
    moved = transition(
        session,
        job_id,
        WAITING,
        JobStatus.STARTING,
        actor=worker,
        message=f"claimed by {worker}",
        on_host=worker.rsplit(":", 1)[0],
        attempt=Job.attempt + 1,
        set_lease=(worker,),
        lease_expires_at=utcnow() + timedelta(seconds=lease_s),
        started_at=job.started_at or utcnow(),
    )
    return session.get(Job, job_id) if moved else None


@dataclass(frozen=True)
class Standing:
    """A worker's job as the database has it: whether to stop, and why."""

    status: JobStatus | None  # None: the job is gone
    lease_owner: str | None
    worker: str

    @property
    def cancel_requested(self) -> bool:
        return self.status == JobStatus.CANCELLING and self.lease_owner == self.worker

    @property
    def lost(self) -> bool:
        """Reaped (its lease expired), maybe claimed by another worker, or ended: stop writing."""
        return not self.cancel_requested and (self.status not in OWNED or self.lease_owner != self.worker)


def standing(session: Session, job_id: str, worker: str) -> Standing:
    job = session.get(Job, job_id)
    return Standing(job.status if job else None, job.lease_owner if job else None, worker)


def report_progress(
    session: Session, job_id: str, worker: str, progress: dict[str, Any] | None, *, first: bool
) -> None:
    """Save how far the run is; ``first``: the first sign of training, ``starting -> running``
    (a job already ``cancelling`` stays so). Nothing changes unless ``worker`` holds the lease."""
    if first:
        transition(
            session,
            job_id,
            (JobStatus.STARTING,),
            JobStatus.RUNNING,
            actor=worker,
            message="training",
            lease_owner=worker,
        )
    touch(session, job_id, lease_owner=worker, progress=progress)


def renew(
    session: Session, job_id: str, worker: str, lease_s: float, cancel_grace_s: float
) -> tuple[bool, bool]:
    """(still held, cancellation forced): extend ``worker``'s lease, unless its job has ignored a
    cancellation for longer than ``cancel_grace_s``: then it is marked cancelled here, and the
    worker's process is to exit."""
    job = session.get(Job, job_id)
    if job is None or job.status not in HELD or job.lease_owner != worker:
        return False, False
    if not _overdue(job, cancel_grace_s):
        held = touch(
            session, job_id, lease_owner=worker, lease_expires_at=utcnow() + timedelta(seconds=lease_s)
        )
        return held, False
    forced = transition(
        session,
        job_id,
        (JobStatus.CANCELLING,),
        JobStatus.CANCELLED,
        actor=worker,
        message=f"cancelled: training did not stop within {cancel_grace_s:g}s",
        lease_owner=worker,
        finished_at=utcnow(),
        error=_error(CancelledError.type, "cancelled; the run was terminated"),
    )
    return False, forced


def _overdue(job: Job, cancel_grace_s: float) -> bool:
    if job.status != JobStatus.CANCELLING or job.cancel_requested_at is None:
        return False
    return (utcnow() - as_utc(job.cancel_requested_at)).total_seconds() > cancel_grace_s


def succeed(
    session: Session,
    job_id: str,
    worker: str,
    *,
    report: dict[str, Any],
    progress: dict[str, Any],
    artifacts: Iterable[Mapping[str, Any]],
) -> bool:
    """The run's end with its report and its artifact rows, in one transaction: a job is never
    succeeded without its artifacts. True if it moved, or an earlier try of this write did (its
    commit landed but the worker never heard so); False if cancelled meanwhile or no longer held."""
    moved = transition(
        session,
        job_id,
        OWNED,
        JobStatus.SUCCEEDED,
        actor=worker,
        message="succeeded",
        lease_owner=worker,
        report=report,
        progress=progress,
        finished_at=utcnow(),
    )
    if moved:  # new rows on each try: a rolled-back transaction's rows cannot be added again
        session.add_all(Artifact(job_id=job_id, **fields) for fields in artifacts)
    return moved or _ended(session, job_id, worker, JobStatus.SUCCEEDED)


@dataclass(frozen=True)
class Ending:
    """How a worker ends its job otherwise: the state, the states it may leave, the error recorded."""

    target: JobStatus
    sources: tuple[JobStatus, ...]
    error_type: str
    message: str

    @classmethod
    def failed(cls, error_type: str, message: str) -> Ending:
        return cls(JobStatus.FAILED, OWNED, error_type, message)

    @classmethod
    def cancelled(cls, message: str, *, requested: bool = True) -> Ending:
        """``requested``: only a job asked to cancel (a run that ended anyway, or failed after the
        request: the user's intent wins); else also one the run itself stopped."""
        sources = (JobStatus.CANCELLING,) if requested else HELD
        return cls(JobStatus.CANCELLED, sources, CancelledError.type, message)

    @classmethod
    def pruned(cls, message: str) -> Ending:
        """A sweep's trial its pruner stopped early (``domain.sweeps``); ``message`` says why. A job
        asked to cancel meanwhile is not pruned: it ends cancelled, the user's intent."""
        return cls(JobStatus.PRUNED, OWNED, PRUNED_TYPE, message)


def end(session: Session, job_id: str, worker: str, ending: Ending, **values: Any) -> bool:
    """Move ``worker``'s job as ``ending`` says (``values``: the last progress, say); True if it
    moved, or an earlier try of this write did."""
    moved = transition(
        session,
        job_id,
        ending.sources,
        ending.target,
        actor=worker,
        message=ending.message.splitlines()[0] if ending.message else ending.target.value,
        lease_owner=worker,
        error=_error(ending.error_type, ending.message),
        finished_at=utcnow(),
        **values,
    )
    return moved or _ended(session, job_id, worker, ending.target)


def _ended(session: Session, job_id: str, worker: str, target: JobStatus) -> bool:
    job = session.get(Job, job_id, populate_existing=True)
    return job is not None and job.status == target and job.lease_owner == worker


# ---------------------------------------------------------------- the dispatcher's side


def mark_published(session: Session, job_id: str, placement: Placement) -> bool:
    """The job is handed to ``placement``'s host: it holds those devices (``store.scheduler``).
    False, and nothing written, if it no longer waits (cancelled since the pass read it, or, for a
    lost message published again, taken by a worker in between): then no message must go.

    A retrying job becomes queued again. The dispatcher calls it in the transaction that holds
    ``store.locks.DISPATCH``, before it publishes (in a savepoint it rolls back if the publish
    fails): the host's worker, claiming at once, waits for the commit and finds the placement.
    For a job published again (its message was lost) it only moves ``published_at``.
    """
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.status not in WAITING:
        return False
    again = job.status == JobStatus.QUEUED and job.published_at is not None
    values: dict[str, Any] = dict(
        published_at=utcnow(), placed_on=placement.worker, devices=list(placement.devices)
    )
    if job.status == JobStatus.RETRYING:
        marked = transition(
            session, job_id, (JobStatus.RETRYING,), JobStatus.QUEUED, message="requeued", **values
        )
    else:  # the update matches nothing if a cancel has committed since the read above
        marked = touch(session, job_id, **values)
    if not marked:
        return False
    what = "published again (the broker lost it)" if again else "handed to the pool"
    where = f"{placement.worker}, devices {_indices(placement.devices)}"
    add_event(session, job_id, "dispatched", f"{what}: {where}")
    return True


def _indices(devices: Iterable[int]) -> str:
    return ",".join(str(d) for d in devices)


def reap_expired(session: Session, now: datetime | None = None) -> list[str]:
    """Jobs whose worker stopped renewing its lease: back to the queue while attempts remain,
    else failed (``worker_lost``); a job asked to cancel ends cancelled. The ids of those moved."""
    now = now or utcnow()
    reaped = []
    for job in expired_leases(session, now):
        note = f"worker {job.lease_owner} lost (lease expired)"
        values: dict[str, Any]
        if job.status == JobStatus.CANCELLING:
            target, message = JobStatus.CANCELLED, note
            values = dict(
                finished_at=now, error=_error(CancelledError.type, "cancelled; the worker was lost")
            )
        elif job.attempt < job.max_attempts:
            target, message = JobStatus.RETRYING, note + "; will retry"
            # placed again by the dispatcher, on whichever host has room then
            values = dict(published_at=None, lease_expires_at=None, placed_on=None, devices=None)
        else:
            target, message = JobStatus.FAILED, note
            used = f"{note}; {job.attempt} attempt(s) used"
            values = dict(finished_at=now, error=_error(WorkerLostError.type, used))
        done = transition(
            session,
            job.id,
            (job.status,),
            target,
            message=message,
            lease_expired_at=now,  # unless it was renewed meanwhile
            set_lease=(None,),
            **values,
        )
        if done:
            reaped.append(job.id)
    return reaped


# ---------------------------------------------------------------- the API's side


def request_cancel(session: Session, job_id: str, actor: str | None = None) -> Job | None:
    """Waiting jobs are cancelled at once; started ones are asked to stop (their worker polls)."""
    now = utcnow()
    if transition(
        session,
        job_id,
        WAITING,
        JobStatus.CANCELLED,
        actor=actor,
        message="cancelled",
        finished_at=now,
        cancel_requested_at=now,
        error=_error(CancelledError.type, "cancelled before it started"),
    ):
        return session.get(Job, job_id)
    transition(
        session,
        job_id,
        OWNED,
        JobStatus.CANCELLING,
        actor=actor,
        message="cancellation requested",
        cancel_requested_at=now,
    )
    return session.get(Job, job_id)
