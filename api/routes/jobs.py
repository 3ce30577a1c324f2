"""Jobs: submit, list, read, cancel, delete (DESIGN.md §4, §5)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from api.auth import CallerDep, JobDep, WriterDep
from api.cursors import decode_job_cursor, encode_job_cursor
from api.deps import SessionDep, StateDep
from api.documents import spec_document
from api.problems import FieldError, Problem, ProblemError
from api.schemas import JobOut, JobPage, JobStatus
from api.validation import check_resources, invalid_document, validate_spec
from api.views import PRIORITIES, etag, job_out, job_path, job_summary
from core.paths import named_uploads, normal
from core.spec import JobSpec
from store.audit import cancel, soft_delete
from store.identity import Caller
from store.jobs import add_event
from store.models import TERMINAL, IdempotencyKey, Job, Upload
from store.quotas import QuotaExceeded, admit_job
from store.scheduler import Wait, waits

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such job."},
    409: {"model": Problem, "description": "The job's state does not allow this."},
}


SpecBody = Annotated[Any, Depends(spec_document)]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retry-safe submission: the same key with the same body returns the same job.",
    ),
]


def _request_hash(body: Any) -> str:
    # Canonical JSON: a retry that reorders keys or spacing is still the same request.
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _replay(session: Session, owner: str, key: str, request_hash: str) -> Job | None:
    """The job an earlier request with this key made; 422 if that request had another body."""
    record = session.get(IdempotencyKey, (owner, key))
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise ProblemError(
            422,
            "this Idempotency-Key was used with a different request body",
            kind="idempotency-key-reused",
            errors=[FieldError(field="Idempotency-Key", message="already used with another body")],
        )
    return session.get(Job, record.job_id)


def check_uploads(session: Session, spec: JobSpec, caller: Caller) -> None:
    """A spec may name its own team's uploads only: another team's is as absent as a missing one."""
    errors = []
    for field, path in named_uploads(spec.model_dump(mode="json")):
        upload = session.scalar(select(Upload).where(Upload.path == normal(path)))
        if upload is None or not caller.sees(upload.team):
            errors.append(FieldError(field=field, message=f"no upload {path!r} (upload it first)"))
    if errors:
        raise invalid_document("spec", errors)


def _new_job(session: Session, spec: JobSpec, caller: Caller, max_attempts: int) -> Job:
    job = Job(
        name=spec.name,
        owner=caller.user,
        team=caller.team,
        spec=spec.model_dump(mode="json"),
        status="queued",
        queue=spec.resources.gpu_type,
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
        to_status="queued",
    )
    return job


def _accepted(response: Response, session: Session, job: Job) -> JobOut:
    response.headers["Location"] = job_path(job.id)
    response.headers["ETag"] = etag(job)
    return job_out(session, job)


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Submit a job",
    responses={
        409: {"model": Problem, "description": "The team's queue is full or its storage quota used up."},
        413: {"model": Problem, "description": "The spec is larger than 1 MiB."},
        415: {"model": Problem, "description": "Neither application/json nor application/yaml."},
        422: {"model": Problem, "description": "Invalid spec, each problem naming its field."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                kind: {"schema": {"$ref": "#/components/schemas/JobSpec"}}
                for kind in ("application/json", "application/yaml")
            },
        }
    },
)
def submit_job(
    body: SpecBody,
    session: SessionDep,
    state: StateDep,
    caller: WriterDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    """Validate the spec and store the job for the caller's team: it waits (`queued`) until the
    scheduler gives it a GPU (`queue_position` and `waiting` say where it stands and why).

    The answer is `202 Accepted` with `Location: /v1/jobs/{id}`. With an `Idempotency-Key`, a
    retry with the same body gets the same job back (`Idempotent-Replayed: true`), and the same
    key with another body is refused (422). A team with `max_queued` jobs waiting gets `409`.
    """
    spec = validate_spec(body)
    request_hash = _request_hash(body)
    owner = caller.user
    if idempotency_key and (job := _replay(session, owner, idempotency_key, request_hash)):
        response.headers["Idempotent-Replayed"] = "true"
        return _accepted(response, session, job)
    check_uploads(session, spec, caller)
    check_resources(spec, state.settings, session)
    try:
        admit_job(session, caller.team)  # holds the team's lock until the commit below
    except QuotaExceeded as e:
        raise ProblemError(409, str(e), kind=e.kind) from None
    job = _new_job(session, spec, caller, state.settings.max_attempts)
    if idempotency_key:
        session.add(
            IdempotencyKey(owner=owner, key=idempotency_key, request_hash=request_hash, job_id=job.id)
        )
    try:
        session.commit()
    except IntegrityError:
        # Another request with the same key committed first: answer as its replay.
        session.rollback()
        if idempotency_key and (job := _replay(session, owner, idempotency_key, request_hash)):
            response.headers["Idempotent-Replayed"] = "true"
            return _accepted(response, session, job)
        raise
    state.wake_dispatcher()
    return _accepted(response, session, job)


@router.get(
    "",
    response_model=JobPage,
    summary="List jobs, newest first",
    responses={304: {"description": "The page is unchanged since the ETag given in If-None-Match."}},
)
def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    status: Annotated[list[JobStatus] | None, Query(description="Repeat to match any of several.")] = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    team: Annotated[
        str | None, Query(max_length=100, description="Admins: one team's jobs (others see their own).")
    ] = None,
    name: Annotated[str | None, Query(max_length=100, description="Substring, case-insensitive.")] = None,
    cursor: Annotated[
        str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """Your team's jobs (an admin's: every team's, or `team`'s), as summaries (the spec and the
    report are on `GET /v1/jobs/{id}`). The page comes with an `ETag`: poll with `If-None-Match`
    to get `304` while nothing on it changed."""
    stmt = (
        select(Job.id, Job.status, Job.version, Job.created_at)
        .where(Job.deleted_at.is_(None))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit + 1)
    )
    if not caller.is_admin:
        stmt = stmt.where(Job.team == caller.team)
    if status:
        stmt = stmt.where(Job.status.in_(status))
    if owner is not None:
        stmt = stmt.where(Job.owner == owner)
    if team is not None:
        stmt = stmt.where(Job.team == team)
    if name:
        stmt = stmt.where(Job.name.icontains(name, autoescape=True))
    if cursor:
        created, last_id = decode_job_cursor(cursor)
        stmt = stmt.where(or_(Job.created_at < created, (Job.created_at == created) & (Job.id < last_id)))
    keys = session.execute(stmt).all()
    page, more = keys[:limit], len(keys) > limit
    next_cursor = encode_job_cursor(page[-1].created_at, page[-1].id) if more else None
    known = waits(session, page)
    # Decided from the page's ids, versions and queue places, before any row is loaded: a
    # version moves with every change of a job, so equal keys mean an equal page.
    tag = _page_tag(page, known, next_cursor)
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers=headers)
    rows = session.scalars(select(Job).where(Job.id.in_([key.id for key in page])).options(defer(Job.spec)))
    by_id = {job.id: job for job in rows}
    items = [job_summary(by_id[key.id], known.get(key.id)) for key in page if key.id in by_id]
    body = JobPage(items=items, next_cursor=next_cursor).model_dump_json().encode()
    return Response(body, media_type="application/json", headers=headers)


def _page_tag(page: Sequence[Any], known: dict[str, Wait], next_cursor: str | None) -> str:
    digest = hashlib.sha256(repr(next_cursor).encode())
    for key in page:
        wait = known.get(key.id)
        digest.update(f"|{key.id}:{key.version}:{wait}".encode())
    return f'"{digest.hexdigest()[:32]}"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in candidates or tag in candidates


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Read a job",
    responses={304: {"description": "Unchanged since the ETag given in If-None-Match."}, **_PROBLEMS},
)
def get_job(
    job: JobDep,
    session: SessionDep,
    response: Response,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Any:
    """The job, with `ETag: "<version>"`; poll with `If-None-Match` to get `304` while unchanged."""
    tag = etag(job)
    if _matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag, "Cache-Control": "no-cache"})
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = "no-cache"
    return job_out(session, job)


@router.post(
    "/{job_id}/cancel", status_code=202, response_model=JobOut, summary="Cancel a job", responses=_PROBLEMS
)
def cancel_job(job: JobDep, session: SessionDep, caller: WriterDep, response: Response) -> JobOut:
    """A waiting job is cancelled at once; a running one moves to `cancelling` until its worker
    stops. Cancelling a finished job is a `409`."""
    if job.status in TERMINAL:
        raise ProblemError(409, f"job {job.id} is already {job.status}", kind="job-finished")
    updated = cancel(session, job.id, actor=caller.user)
    if updated is None or updated.status not in ("cancelling", "cancelled"):
        # It finished between our read and the cancel.
        status = updated.status if updated else "gone"
        raise ProblemError(409, f"job {job.id} is already {status}", kind="job-finished")
    response.headers["ETag"] = etag(updated)
    return job_out(session, updated)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a finished job",
    responses=_PROBLEMS,
    response_class=Response,
)
def delete_job(job: JobDep, session: SessionDep, state: StateDep, caller: WriterDep) -> Response:
    """Removes the job's metrics and artifacts (files included); the job is gone from the API
    (`404`), but its events stay as the audit trail (`GET /v1/audit`). Live jobs are refused
    with `409`: cancel them first."""
    if job.status not in TERMINAL:
        raise ProblemError(409, f"job {job.id} is {job.status}: cancel it first", kind="job-live")
    locations = soft_delete(session, job.id, actor=caller.user)
    if locations is None:  # a concurrent delete won
        raise ProblemError(404, f"job {job.id!r} does not exist", kind="not-found")
    session.commit()
    # Files go after the commit: a failed commit must not leave rows pointing at deleted files.
    for location in locations:
        try:
            state.artifacts.delete(location)
        except Exception:
            log.warning("could not delete artifact file %s", location, exc_info=True)
    return Response(status_code=204)
