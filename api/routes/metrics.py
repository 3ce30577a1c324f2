"""A job's metric series, for incremental polling: rows come in id order after a cursor."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.auth import JobDep
from api.cursors import decode_row_cursor
from api.deps import SessionDep
from api.problems import Problem
from api.schemas import MetricPage
from api.views import metric_out
from store.models import Metric

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_SCAN = 200_000  # rows read for one downsampled answer; has_more says when there are more


def strided(n: int, points: int) -> list[int]:
    """Indices of ``points`` rows spread evenly over ``n``, always keeping the first and last."""
    if n <= points:
        return list(range(n))
    if points == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})


def downsample(rows: Sequence[Any], max_points: int) -> list[Any]:
    """At most ``max_points`` rows of each (stage, name) series, back in id order."""
    series: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        series[(row.stage, row.name)].append(row)
    kept = [s[i] for s in series.values() for i in strided(len(s), max_points)]
    return sorted(kept, key=lambda row: row.id)


@router.get(
    "/{job_id}/metrics",
    response_model=MetricPage,
    summary="A job's metrics, incrementally",
    responses={404: {"model": Problem, "description": "No such job."}},
)
def get_metrics(
    job: JobDep,
    session: SessionDep,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous answer.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    stage: Annotated[str | None, Query(max_length=32, description="teacher, baseline, student, ...")] = None,
    name: Annotated[list[str] | None, Query(description="Metric names; repeat for several.")] = None,
    max_points: Annotated[
        int | None, Query(ge=2, le=10_000, description="Downsample each (stage, name) series to this many.")
    ] = None,
) -> MetricPage:
    """Rows in id order. Poll with `after=<next_cursor>` to get only the rows written since.

    With `max_points`, every row after the cursor is read (up to 200,000) and each series is
    thinned to at most that many points, keeping its first and last; `limit` does not apply.
    """
    start = decode_row_cursor(after)
    stmt = (
        select(Metric.id, Metric.stage, Metric.epoch, Metric.step, Metric.name, Metric.value)
        .where(Metric.job_id == job.id, Metric.id > start)
        .order_by(Metric.id)
    )
    if stage:
        stmt = stmt.where(Metric.stage == stage)
    if name:
        stmt = stmt.where(Metric.name.in_(name))
    page = limit if max_points is None else MAX_SCAN
    rows = session.execute(stmt.limit(page + 1)).all()
    more = len(rows) > page
    rows = rows[:page]
    last = rows[-1].id if rows else start
    if max_points is not None:
        rows = downsample(rows, max_points)
    return MetricPage(items=[metric_out(r) for r in rows], next_cursor=str(last), has_more=more)
