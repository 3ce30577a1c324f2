"""Jobs: submit, list, read, cancel, delete (DESIGN.md §4, §5). The rules are ``domain.jobs``'s:
these routes parse the request, call it, and render the answer with its headers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response

from api import hot
from api.auth import JobDep, SecretDep, WriterDep
from api.bodies import PAGE
from api.cursors import decode_job_cursor, encode_job_cursor
from api.deps import SessionDep, StateDep
from api.documents import spec_document
from api.problems import Problem
from api.schemas import JobOut, JobPage, JobStatus
from api.validation import validate_spec
from api.views import etag, job_out, job_path, job_summary
from domain import jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
reads = APIRouter(prefix="/v1/jobs", tags=["jobs"])
"""The reads people poll, each in one trip to a worker thread (``api.hot``), the token checked
there: include it with ``api.auth.bearer_secret`` as its dependency, not ``get_caller``."""

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
IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]
UNCACHED = {"Cache-Control": "no-cache"}  # a client may keep a page or a job, but must revalidate it


def _matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in candidates or tag in candidates


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
    idempotency_key: IdempotencyKeyHeader = None,
) -> Any:
    """Validate the spec and store the job for the caller's team: it waits (`queued`) until the
    scheduler gives it a GPU (`queue_position` and `waiting` say where it stands and why).

    The answer is `202 Accepted` with `Location: /v1/jobs/{id}`. With an `Idempotency-Key`, a
    retry with the same body gets the same job back (`Idempotent-Replayed: true`), and the same
    key with another body is refused (422). A team with `max_queued` jobs waiting gets `409`.
    """
    spec = validate_spec(body)
    done = jobs.submit(
        session,
        caller,
        spec,
        state.settings,
        body_hash=jobs.request_hash(body),
        idempotency_key=idempotency_key,
        wake=state.wake_dispatcher,
    )
    headers = {"Location": job_path(done.job.id)}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    headers["ETag"] = etag(done.job.version, done.wait)
    body = job_out(session, done.job, wait=done.wait, known=True).model_dump_json().encode()
    return Response(body, status_code=202, media_type="application/json", headers=headers)


@reads.get(
    "",
    response_model=JobPage,
    summary="List jobs, newest first",
    responses={304: {"description": "The page is unchanged since the ETag given in If-None-Match."}},
)
async def list_jobs(
    state: StateDep,
    secret: SecretDep,
    if_none_match: IfNoneMatch = None,
    status: Annotated[list[JobStatus] | None, Query(description="Repeat to match any of several.")] = None,
    owner: Annotated[str | None, Query(max_length=100)] = None,
    team: Annotated[
        str | None, Query(max_length=100, description="Admins: one team's jobs (others see their own).")
    ] = None,
    name: Annotated[str | None, Query(max_length=100, description="Substring, case-insensitive.")] = None,
    sweep: Annotated[str | None, Query(max_length=100, description="One sweep's trials.")] = None,
    cursor: Annotated[
        str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """Your team's jobs (an admin's: every team's, or `team`'s), as summaries (the spec and the
    report are on `GET /v1/jobs/{id}`). The page comes with an `ETag`: poll with `If-None-Match`
    to get `304` while nothing on it changed."""

    wanted = jobs.JobFilter(
        statuses=status or (),
        owner=owner,
        team=team,
        name=name or None,
        sweep=sweep or None,
        after=decode_job_cursor(cursor) if cursor else None,
    )

    def answer(listing: jobs.Listing) -> hot.Answer:
        # decided from the page's keys, before any row is loaded or any summary built
        headers = {"ETag": listing.tag, **UNCACHED}
        if _matches(if_none_match, listing.tag):
            return Response(status_code=304, headers=headers)
        if (kept := state.job_bodies.get(PAGE, listing.tag)) is not None:  # api.bodies
            return Response(kept, media_type="application/json", headers=headers)

        def finish(session: hot.ReadSession) -> Response:  # up to 200 rows: on a worker thread
            after = listing.next_after
            page = JobPage(
                items=[job_summary(job, wait) for job, wait in listing.rows(session)],
                next_cursor=encode_job_cursor(*after) if after else None,
            )
            body = page.model_dump_json().encode()
            if len(page.items) == len(listing.keys):  # none deleted in between: the page its tag says
                state.job_bodies.put(PAGE, listing.tag, body)
            return Response(body, media_type="application/json", headers=headers)

        return finish

    return await hot.read_list(state, secret, wanted, limit, answer)


@reads.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Read a job",
    responses={304: {"description": "Unchanged since the ETag given in If-None-Match."}, **_PROBLEMS},
)
async def get_job(
    job_id: Annotated[str, Path(max_length=64)],
    state: StateDep,
    secret: SecretDep,
    if_none_match: IfNoneMatch = None,
) -> Any:
    """The job, with an `ETag`; poll with `If-None-Match` to get `304` while unchanged (its state,
    its progress, its metrics, its place in the queue)."""

    def decide(read: hot.Read) -> hot.Answer:
        # decided from the job's version and place, before the job is loaded
        head = jobs.check_visible(read.caller, read.head, job_id)
        wait = read.wait
        tag = etag(head.version, wait)
        if _matches(if_none_match, tag):
            return Response(status_code=304, headers={"ETag": tag, **UNCACHED})
        if (kept := state.job_bodies.get(job_id, tag)) is not None:  # keyed by the ETag: api.bodies
            return Response(kept, media_type="application/json", headers={"ETag": tag, **UNCACHED})

        def finish(session: hot.ReadSession) -> Response:  # a report and a spec: on a worker thread
            job = jobs.get_visible(session, read.caller, job_id)
            answer_tag, answer_wait = tag, wait
            if job.version != head.version:  # it changed in between: answer what was loaded
                answer_wait = jobs.queue_place(session, job)
                answer_tag = etag(job.version, answer_wait)
            body = job_out(session, job, wait=answer_wait, known=True).model_dump_json().encode()
            state.job_bodies.put(job_id, answer_tag, body)
            return Response(body, media_type="application/json", headers={"ETag": answer_tag, **UNCACHED})

        return finish

    return await hot.read_job(state, secret, job_id, decide)


@router.post(
    "/{job_id}/cancel", status_code=202, response_model=JobOut, summary="Cancel a job", responses=_PROBLEMS
)
def cancel_job(job: JobDep, session: SessionDep, caller: WriterDep, response: Response) -> JobOut:
    """A waiting job is cancelled at once; a running one moves to `cancelling` until its worker
    stops. Cancelling a finished job is a `409`."""
    updated = jobs.cancel(session, caller, job)
    out = job_out(session, updated)
    response.headers["ETag"] = etag(updated.version, out.waiting)
    return out


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
    jobs.delete(session, caller, job, state.artifacts)
    return Response(status_code=204)
