"""Jobs as their owners see them: submit, list, read, cancel, delete (DESIGN.md §4, §5).

A caller sees its own team's jobs (an admin: every team's); another team's job, or a deleted one,
is as absent as a job that never existed. Submitting and deleting commit themselves, because
something must follow the commit: the dispatcher's wake-up, the removal of files. Everything else
leaves the commit to the caller's unit of work. Cancelling and deleting are recorded with their
actor as job events: the audit trail (``store.audit``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import (
    FieldIssue,
    IdempotencyKeyReusedError,
    JobFinishedError,
    JobLiveError,
    NotFoundError,
)
from core.spec import JobSpec
from domain.lifecycle import request_cancel
from domain.specs import check_spec
from store import stages as kept
from store.artifacts import ArtifactStore
from store.identity import Caller
from store.jobs import (
    JobHead,
    JobKeyRow,
    JobQuery,
    add_event,
    hide,
    job_keys,
    jobs_without_spec,
    purge_results,
)
from store.models import PRIORITIES, TERMINAL, IdempotencyKey, Job, JobStatus, as_utc
from store.places import ASK, SCHEDULING, Ask, lookup
from store.quotas import admit_job
from store.scheduler import Wait
from store.settings import Settings

log = logging.getLogger(__name__)


def get_visible(session: Session, caller: Caller, job_id: str) -> Job:
    """The job, if ``caller`` may see it: another team's or a deleted job is a 404 (its existence
    is not revealed; a deleted job's row stays for the audit trail)."""
    job = session.get(Job, job_id)
    if job is None or job.deleted_at is not None or not caller.sees(job.team):
        raise NotFoundError("job", job_id)
    return job


def check_visible(caller: Caller, head: JobHead | None, job_id: str) -> JobHead:
    """``head`` (already read: ``store.reads``), if it exists and ``caller`` may see it; else 404."""
    if head is None or head.deleted or not caller.sees(head.team):
        raise NotFoundError("job", job_id)
    return head


def head_place(session: Session, head: JobHead, serial: int | Ask | None = ASK) -> Wait | None:
    """``queue_place`` of a job known by its head (``serial``: the places' serial, if known)."""
    return lookup(session, [head], serial).get(head.id)


def queue_place(session: Session, job: Job) -> Wait | None:
    """Where a job that has not started stands in its queue, and why it waits, as of the
    dispatcher's last pass (``store.places``: a look-up, the queue is not ranked here)."""
    return lookup(session, [job]).get(job.id)


# ---------------------------------------------------------------- submit


def request_hash(body: Any) -> str:
    """What identifies a submission for its Idempotency-Key: the body as canonical JSON, so a
    retry that reorders keys or spacing is still the same request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Submitted:
    job: Job
    replayed: bool  # an earlier request with the same Idempotency-Key made it
    wait: Wait | None  # its place; a new job's is SCHEDULING: the queue is not ranked to answer


def submit(
    session: Session,
    caller: Caller,
    spec: JobSpec,
    settings: Settings,
    *,
    body_hash: str,
    idempotency_key: str | None = None,
    wake: Callable[[], None] = lambda: None,
) -> Submitted:
    """Store a job for the caller's team, commit, then ``wake`` the dispatcher: the job waits
    (``queued``) in the database until the scheduler gives it a GPU.

    With an ``idempotency_key``, a request with the same ``body_hash`` gets the same job back
    and one with another body is refused (422). The spec's uploads and costs are checked
    (``domain.specs``), then the team's quotas, under the team's lock until the commit.
    """
    if idempotency_key and (job := _replay(session, caller.user, idempotency_key, body_hash)):
        return Submitted(job, replayed=True, wait=queue_place(session, job))
    spec = check_spec(session, caller, spec, settings)  # with teacher.from_job filled in
    admit_job(session, caller.team, caller.team_limited)  # holds the team's lock until the commit below
    job = _new_job(session, spec, caller, settings.max_attempts)
    if idempotency_key:
        session.add(
            IdempotencyKey(owner=caller.user, key=idempotency_key, request_hash=body_hash, job_id=job.id)
        )
    try:
        session.commit()
    except IntegrityError:
        # Another request with the same key committed first: answer as its replay.
        session.rollback()
        if idempotency_key and (job := _replay(session, caller.user, idempotency_key, body_hash)):
            return Submitted(job, replayed=True, wait=queue_place(session, job))
        raise
    wake()
    return Submitted(job, replayed=False, wait=SCHEDULING)


def _replay(session: Session, owner: str, key: str, body_hash: str) -> Job | None:
    """The job an earlier request with this key made; 422 if that request had another body."""
    record = session.get(IdempotencyKey, (owner, key))
    if record is None:
        return None
    if record.request_hash != body_hash:
        raise IdempotencyKeyReusedError(
            "this Idempotency-Key was used with a different request body",
            errors=[FieldIssue("Idempotency-Key", "already used with another body")],
        )
    return session.get(Job, record.job_id)


def _new_job(session: Session, spec: JobSpec, caller: Caller, max_attempts: int) -> Job:
    job = Job(
        name=spec.name,
        owner=caller.user,
        team=caller.team,
        spec=spec.model_dump(mode="json"),
        status=JobStatus.QUEUED,
        queue=spec.resources.gpu_type,
        gpus=spec.resources.gpus,  # the scheduler gives it max(1, gpus) slots of one host
        priority=PRIORITIES[spec.resources.priority],
        max_attempts=max_attempts,
    )
    session.add(job)
    session.flush()
    add_event(
        session,
        job.id,
        "submitted",
        f"submitted by {caller.user} ({caller.team}), queued on {job.queue}",
        actor=caller.user,
        to_status=JobStatus.QUEUED,
        bump=False,  # a new row: its first version stands for its first event
    )
    return job


def new_trial_job(session: Session, caller: Caller, spec: JobSpec, settings: Settings) -> Job:
    """A sweep's trial (``domain.sweeps``) as an ordinary job: the same checks and team quotas as
    ``submit``, without its commit (the sweep's pass commits its trials together)."""
    spec = check_spec(session, caller, spec, settings)
    admit_job(session, caller.team)
    return _new_job(session, spec, caller, settings.max_attempts)


# ---------------------------------------------------------------- list


@dataclass(frozen=True)
class JobFilter:
    """What the list is asked for; every field that is set must match."""

    statuses: Collection[JobStatus] = ()
    owner: str | None = None
    team: str | None = None  # one team's jobs (anyone else's team matches nothing for a non-admin)
    name: str | None = None  # a substring, case-insensitive
    sweep: str | None = None  # one sweep's trials
    after: tuple[datetime, str] | None = None  # the (created_at, id) of the previous page's last job


@dataclass(frozen=True)
class Listing:
    """A page of the jobs list as keys: enough to answer a conditional request without rows."""

    keys: Sequence[JobKeyRow]  # newest first
    waits: dict[str, Wait]
    more: bool

    @property
    def next_after(self) -> tuple[datetime, str] | None:
        """The ``after`` of the next page; None on the last."""
        return (self.keys[-1].created_at, self.keys[-1].id) if self.more else None

    @property
    def tag(self) -> str:
        """The page's ETag, from its keys: a version moves with every change of a job, and a queue
        place with every change ahead of it, so equal keys mean an equal page."""
        after = self.next_after  # in UTC: SQLite's rows come back naive
        digest = hashlib.sha256(
            b"" if after is None else f"{as_utc(after[0]).isoformat()},{after[1]}".encode()
        )
        for key in self.keys:
            digest.update(f"|{key.id}:{key.version}:{self.waits.get(key.id)}".encode())
        return f'"{digest.hexdigest()[:32]}"'

    def rows(self, session: Session) -> list[tuple[Job, Wait | None]]:
        """The page's jobs (without their spec) and where each waits, in the page's order."""
        by_id = jobs_without_spec(session, [key.id for key in self.keys])
        return [(by_id[key.id], self.waits.get(key.id)) for key in self.keys if key.id in by_id]


def list_jobs(
    session: Session, caller: Caller, wanted: JobFilter, limit: int, serial: int | Ask | None = ASK
) -> Listing:
    """The caller's team's jobs (an admin's: every team's, or ``wanted.team``'s), newest first
    (``serial``: the queue places' serial, if the caller has read it)."""
    keys = job_keys(session, page_query(caller, wanted), limit + 1)
    return listing(keys, limit, lambda page: lookup(session, page, serial))


def page_query(caller: Caller, wanted: JobFilter) -> JobQuery:
    """What ``caller`` may see of what it asks for: a non-admin sees its own team, and ``team``
    narrows further (to nothing: another team's)."""
    teams = None if caller.is_admin else {caller.team}
    if wanted.team is not None:
        teams = {wanted.team} if teams is None else teams & {wanted.team}
    return JobQuery(
        teams=teams,
        statuses=wanted.statuses,
        owner=wanted.owner,
        name=wanted.name,
        sweep=wanted.sweep,
        after=wanted.after,
    )


def listing(
    keys: Sequence[JobKeyRow], limit: int, places: Callable[[Sequence[JobKeyRow]], dict[str, Wait]]
) -> Listing:
    """The page of ``limit`` from ``limit + 1`` keys (one more tells whether a page follows), with
    the places of its waiting jobs."""
    page = keys[:limit]
    return Listing(keys=page, waits=places(page), more=len(keys) > limit)


# ---------------------------------------------------------------- cancel, delete


def cancel(session: Session, caller: Caller, job: Job) -> Job:
    """A waiting job is cancelled at once; a started one moves to ``cancelling`` until its worker
    stops. A finished job is a 409, also when it finished while the request was on its way."""
    if job.status in TERMINAL:
        raise JobFinishedError(f"job {job.id} is already {job.status}")
    updated = request_cancel(session, job.id, actor=caller.user)
    if updated is None or updated.status not in (JobStatus.CANCELLING, JobStatus.CANCELLED):
        status = updated.status if updated else "gone"
        raise JobFinishedError(f"job {job.id} is already {status}")
    add_event(session, job.id, "cancel", f"cancel requested by {caller.user}", actor=caller.user)
    return updated


def delete(session: Session, caller: Caller, job: Job, artifacts: ArtifactStore) -> None:
    """Hide a finished job and remove its metrics and artifacts, files included, and the kept
    stages no other job uses; its events stay (the audit trail). A live job is a 409: cancel it
    first. Commits, then deletes the files: a failed commit must not leave rows pointing at
    deleted files."""
    if job.status not in TERMINAL:
        raise JobLiveError(f"job {job.id} is {job.status}: cancel it first")
    if not hide(session, job.id):  # a concurrent delete won
        raise NotFoundError("job", job.id)
    locations = purge_results(session, job.id)
    # a teacher or baseline it trained stays while another job uses it
    locations += [entry["location"] for row in kept.release(session, job.id) for entry in row.files.values()]
    add_event(session, job.id, "deleted", f"deleted by {caller.user}", actor=caller.user)
    session.commit()
    for location in locations:
        try:
            artifacts.delete(location)
        except Exception:
            log.warning("could not delete artifact file %s", location, exc_info=True)
