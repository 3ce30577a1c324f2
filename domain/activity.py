"""What a job has done so far: its metric series and its events, read incrementally.

Both are read in row-id order after a cursor (the last id a client saw), so a page or a poll
returns only what was written since. The event stream (``api/routes/events.py``) keeps its loop
and its connection handling; each of its polls is ``poll_job`` here, on a short session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from store.activity import MetricRow, events_after, metric_rows
from store.identity import token_valid
from store.models import TERMINAL, Job, JobEvent

T = TypeVar("T")

MAX_SCAN = 200_000
"""Metric rows read for one downsampled answer; ``has_more`` says when there are more."""


@dataclass(frozen=True)
class RowPage(Generic[T]):
    """One page of rows in id order; ``next_cursor`` is the last id read (``after`` if none)."""

    items: list[T]
    next_cursor: int
    has_more: bool

    @classmethod
    def of(cls, rows: Sequence[T], limit: int, after: int, *, key: Callable[[T], int]) -> RowPage[T]:
        """The first ``limit`` of ``rows``, read with ``limit + 1`` to learn whether more follow."""
        items = list(rows[:limit])
        return cls(items, key(items[-1]) if items else after, len(rows) > limit)


# ---------------------------------------------------------------- metrics


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


def metrics_page(
    session: Session,
    job_id: str,
    *,
    after: int = 0,
    limit: int = 1000,
    stage: str | None = None,
    names: Sequence[str] | None = None,
    max_points: int | None = None,
) -> RowPage[MetricRow]:
    """Metric rows (id, stage, epoch, step, name, value) after ``after``, in id order.

    With ``max_points`` every row after the cursor is read (up to ``MAX_SCAN``) and each series
    thinned to at most that many points, keeping its first and last; ``limit`` does not apply.
    The cursor is the last row read either way, so the next poll starts after what was thinned.
    """
    page = limit if max_points is None else MAX_SCAN
    rows = metric_rows(session, job_id, after=after, limit=page + 1, stage=stage, names=names)
    read = RowPage.of(rows, page, after, key=lambda row: row.id)
    if max_points is None:
        return read
    return RowPage(downsample(read.items, max_points), read.next_cursor, read.has_more)


# ---------------------------------------------------------------- events


def events_page(session: Session, job_id: str, *, after: int = 0, limit: int = 200) -> RowPage[JobEvent]:
    return RowPage.of(events_after(session, job_id, after, limit + 1), limit, after, key=lambda e: e.id)


@dataclass(frozen=True)
class Polled:
    """What one poll of a followed job found."""

    job: Job
    changed: bool  # its version differs from the one last sent
    events: list[JobEvent]
    finished: bool  # ended, and every event of it read


def poll_job(
    session: Session, job_id: str, *, seen_version: int | None, after: int, token_id: str, batch: int
) -> Polled | None:
    """The job and its events after ``after`` (at most ``batch``); None once the job is gone or
    deleted, or the follower's token has been revoked (revocation ends open streams too)."""
    job = session.get(Job, job_id)
    if job is None or job.deleted_at is not None or not token_valid(session, token_id):
        return None
    # Events after the job: a state change commits its event with the row, so every event up
    # to the state just read is visible now, and a finished job's last events are sent.
    events = events_after(session, job_id, after, batch)
    # Finished only when every event is out: a full batch means more are waiting.
    finished = job.status in TERMINAL and len(events) < batch
    return Polled(job, job.version != seen_version, events, finished)
