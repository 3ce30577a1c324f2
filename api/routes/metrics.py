"""A job's metric series, for incremental polling: rows come in id order after a cursor."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from api import hot
from api.auth import SecretDep
from api.cursors import decode_row_cursor
from api.deps import StateDep
from api.problems import Problem
from api.schemas import MetricPage
from api.views import metric_out
from domain import activity, jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
"""A hot read (``api.hot``): include it with ``api.auth.bearer_secret`` as its dependency."""


@router.get(
    "/{job_id}/metrics",
    response_model=MetricPage,
    summary="A job's metrics, incrementally",
    responses={404: {"model": Problem, "description": "No such job."}},
)
async def get_metrics(
    job_id: Annotated[str, Path(max_length=64)],
    state: StateDep,
    secret: SecretDep,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous answer.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    stage: Annotated[str | None, Query(max_length=32, description="teacher, baseline, student, ...")] = None,
    name: Annotated[list[str] | None, Query(description="Metric names; repeat for several.")] = None,
    max_points: Annotated[
        int | None, Query(ge=2, le=10_000, description="Downsample each (stage, name) series to this many.")
    ] = None,
) -> Any:
    """Rows in id order. Poll with `after=<next_cursor>` to get only the rows written since.

    With `max_points`, every row after the cursor is read (up to 200,000) and each series is
    thinned to at most that many points, keeping its first and last; `limit` does not apply.
    """

    def decide(read: hot.Read) -> hot.Finish:
        head = jobs.check_visible(read.caller, read.head, job_id)
        return lambda session: page_of(session, head.id)

    def page_of(session: hot.ReadSession, job: str) -> Response:  # up to 200,000 rows: on a thread
        page = activity.metrics_page(
            session,
            job,
            after=decode_row_cursor(after),
            limit=limit,
            stage=stage,
            names=name,
            max_points=max_points,
        )
        out = MetricPage(
            items=[metric_out(r) for r in page.items],
            next_cursor=str(page.next_cursor),
            has_more=page.has_more,
        )
        return Response(out.model_dump_json().encode(), media_type="application/json")

    return await hot.read_job(state, secret, job_id, decide)
