"""Sweeps: a search over a spec's parameters whose trials are ordinary jobs (DESIGN.md §8). The
rules are ``domain.sweeps``'s: these routes parse the request, call it, and render the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from api.auth import CallerDep, WriterDep
from api.cursors import decode_job_cursor, encode_job_cursor
from api.deps import SessionDep, StateDep
from api.documents import spec_document
from api.problems import Problem
from api.schemas import JobOut, SweepLinks, SweepOut, SweepPage, SweepSummary, TrialOut
from api.validation import validate_with
from api.views import etag, job_out, job_path
from core.errors import FieldIssue, InvalidDocumentError
from core.spec import JobSpec
from domain import sweeps
from domain.sweeps import SPACE_TAGS, SweepRequest, SweepView, TrialView
from store.models import Sweep

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such sweep."},
    409: {"model": Problem, "description": "The sweep has ended."},
}
_REQUEST = TypeAdapter(SweepRequest)
_SPEC = TypeAdapter(JobSpec)

Body = Annotated[Any, Depends(spec_document)]


def _path(sweep_id: str) -> str:
    return f"/v1/sweeps/{sweep_id}"


def _summary_fields(sweep: Sweep, counts: dict[str, int]) -> dict[str, Any]:
    request = sweep.request
    return dict(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        message=sweep.message,
        method=request["method"],
        objective=request["objective"],
        early_stopping=request["early_stopping"],
        max_trials=request["max_trials"],
        max_concurrent=request["max_concurrent"],
        trials_by_status=counts,
        best_job_id=sweep.best_job_id,
        best_value=sweep.best_value,
        owner=sweep.owner,
        team=sweep.team,
        version=sweep.version,
        created_at=sweep.created_at,
        updated_at=sweep.updated_at,
        finished_at=sweep.finished_at,
        links=SweepLinks(self=_path(sweep.id), cancel=f"{_path(sweep.id)}/cancel"),
    )


def _trial(view: TrialView) -> TrialOut:
    return TrialOut(
        number=view.number,
        job_id=view.job_id,
        params=view.params,
        status=view.status,
        objective=view.objective,
        pruned_at_epoch=view.pruned_at_epoch,
        error=view.error,
    )


def _out(session: SessionDep, sweep: Sweep, view: SweepView) -> SweepOut:
    counts = sweeps.trial_counts_of(session, [sweep.id]).get(sweep.id, {})
    return SweepOut(
        **_summary_fields(sweep, counts),
        request=sweep.request,
        trials=[_trial(t) for t in view.trials],
        best=_trial(view.best) if view.best else None,
        importances=view.importances,
        importances_note=view.importances_note,
    )


def get_sweep(sweep_id: Annotated[str, Path(max_length=64)], session: SessionDep, caller: CallerDep) -> Sweep:
    """Another team's sweep is a 404, like a job."""
    return sweeps.get_visible(session, caller, sweep_id)


SweepDep = Annotated[Sweep, Depends(get_sweep)]


def _parse(body: Any) -> tuple[SweepRequest, JobSpec]:
    if not isinstance(body, dict):
        raise InvalidDocumentError("sweep", [FieldIssue("(body)", "must be a JSON object")])
    try:
        request: SweepRequest = validate_with(_REQUEST, body, what="sweep", field="")
    except InvalidDocumentError as e:
        raise InvalidDocumentError("sweep", [_untagged(i, body) for i in e.errors]) from None
    base: JobSpec = validate_with(_SPEC, request.base, what="sweep", field="base")
    return request, base


def _untagged(issue: FieldIssue, body: dict[str, Any]) -> FieldIssue:
    """``params.<path>.range.low`` -> ``params.<path>.low``: the space's tag is no field."""
    params = body.get("params")
    for path in params if isinstance(params, dict) else ():
        for tag in SPACE_TAGS:
            head = f"params.{path}.{tag}"
            if issue.field == head or issue.field.startswith(head + "."):
                return FieldIssue(f"params.{path}" + issue.field[len(head) :], issue.message)
    return issue


@router.post(
    "",
    status_code=202,
    response_model=SweepOut,
    summary="Start a sweep",
    responses={
        409: {"model": Problem, "description": "The team's queue is full or its storage quota used up."},
        413: {"model": Problem, "description": "The request is larger than 1 MiB."},
        415: {"model": Problem, "description": "Neither application/json nor application/yaml."},
        422: {"model": Problem, "description": "Invalid request, each problem naming its field."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                kind: {"schema": {"$ref": "#/components/schemas/SweepRequest"}}
                for kind in ("application/json", "application/yaml")
            },
        }
    },
)
def create_sweep(
    body: Body, session: SessionDep, state: StateDep, caller: WriterDep, response: Response
) -> SweepOut:
    """Validate the request (the base spec as `POST /v1/jobs` does, each parameter's path and
    values against it) and start the sweep: its first trial is submitted at once, as an ordinary
    job of the caller's team; the others follow once it has trained the shared teacher and
    baseline, at most `max_concurrent` live at a time, until `max_trials` were made.

    Parameters are spec paths (`distill.losses.0.temperature`) with a list of values, or a range
    `{low, high, log, integer}` (random and tpe only). `early_stopping`: `asha` or `median` on the
    student's per-epoch objective; a stopped trial ends `pruned`. The answer is `202 Accepted` with
    `Location: /v1/sweeps/{id}`."""
    request, base = _parse(body)
    sweep = sweeps.create(session, caller, request, base, state.settings, wake=state.wake_dispatcher)
    response.headers["Location"] = _path(sweep.id)
    return _out(session, sweep, sweeps.describe(session, state.settings, sweep))


@router.get("", response_model=SweepPage, summary="List sweeps, newest first")
def list_sweeps(
    session: SessionDep,
    caller: CallerDep,
    cursor: Annotated[
        str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> SweepPage:
    """Your team's sweeps (an admin's: every team's), without their trials."""
    after = decode_job_cursor(cursor) if cursor else None
    rows = sweeps.page(session, caller, after, limit + 1)
    page = rows[:limit]
    counts = sweeps.trial_counts_of(session, [s.id for s in page])
    more = len(rows) > limit
    return SweepPage(
        items=[SweepSummary(**_summary_fields(s, counts.get(s.id, {}))) for s in page],
        next_cursor=encode_job_cursor(page[-1].created_at, page[-1].id) if more else None,
    )


@router.get("/{sweep_id}", response_model=SweepOut, summary="Read a sweep", responses=_PROBLEMS)
def get_sweep_route(sweep: SweepDep, session: SessionDep, state: StateDep) -> SweepOut:
    """The sweep with every trial (its job, parameters, status, objective, the epoch a pruned one
    stopped at), the best trial, and each parameter's importance once two trials completed."""
    return _out(session, sweep, sweeps.describe(session, state.settings, sweep))


@router.post(
    "/{sweep_id}/cancel",
    status_code=202,
    response_model=SweepOut,
    summary="Cancel a sweep",
    responses=_PROBLEMS,
)
def cancel_sweep(sweep: SweepDep, session: SessionDep, state: StateDep, caller: WriterDep) -> SweepOut:
    """No trial starts any more, and its live trials are cancelled (a waiting one at once, a running
    one within seconds). Cancelling an ended sweep is a `409`."""
    updated = sweeps.cancel(session, caller, sweep)
    return _out(session, updated, sweeps.describe(session, state.settings, updated))


class RepeatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repeats: int = Field(3, ge=2, le=20, description="Seeds: baseline and student pairs, the teacher once.")


@router.post(
    "/{sweep_id}/repeat",
    status_code=202,
    response_model=JobOut,
    summary="Re-run the best trial with several seeds",
    responses={
        **_PROBLEMS,
        409: {"model": Problem, "description": "No trial completed yet, or the team's queue is full."},
        422: {"model": Problem, "description": "Invalid request, each problem naming its field."},
    },
)
def repeat_best_trial(
    sweep: SweepDep,
    session: SessionDep,
    state: StateDep,
    caller: WriterDep,
    response: Response,
    body: RepeatRequest | None = None,
) -> JobOut:
    """A new job of your team (not a trial): the best trial's spec with `repeats` seeds (default 3),
    so the report gives its KD gain with a 95% confidence interval over the paired seeds. Its
    teacher and baseline are reused from the sweep's. `202 Accepted` with `Location:
    /v1/jobs/{id}`."""
    job = sweeps.repeat_best(session, caller, sweep, (body or RepeatRequest()).repeats, state.settings)
    state.wake_dispatcher()
    response.headers["Location"] = job_path(job.id)
    out = job_out(session, job)
    response.headers["ETag"] = etag(job.version, out.waiting)
    return out
