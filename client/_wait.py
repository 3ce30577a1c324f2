"""Following a job to its end by polling, cheaply.

Each round is one conditional ``GET /v1/jobs/{id}``: a bodiless ``304`` while the job is
unchanged. A job's version moves with its new metric rows and events too, so only when it has
changed are those fetched, when asked for: the rows written since the previous fetch
(cursor-based, so nothing is sent twice). The job is read first: once it is finished, the rows
read after it are all there will be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from client._errors import WaitTimeout
from client._models import Event, EventPage, Job, Metric, MetricPage, drain


class JobReader(Protocol):
    """What following a job reads from the server (``Client`` does; a test may fake it)."""

    def job(self, job_id: str, *, etag: str | None = None) -> Job | None: ...

    def metrics(self, job_id: str, *, after: str | None = None) -> MetricPage: ...

    def events(self, job_id: str, *, after: str | None = None) -> EventPage: ...


@dataclass
class Update:
    """What changed since the previous update: the job (``changed``), new metrics, new events."""

    job: Job
    changed: bool
    metrics: list[Metric] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


OnUpdate = Callable[[Update], None]


@dataclass
class _Cursors:
    etag: str | None = None
    metrics: str | None = None
    events: str | None = None


def wait(
    client: JobReader,
    job_id: str,
    *,
    on_update: OnUpdate | None = None,
    interval: float = 1.0,
    timeout: float | None = None,
    metrics: bool = False,
    events: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Job:
    """Poll until the job is finished and return it; ``on_update`` hears of every change."""
    deadline = None if timeout is None else clock() + timeout
    cursors = _Cursors()
    job: Job | None = None
    while True:
        fresh = client.job(job_id, etag=cursors.etag)
        if fresh is not None:
            job, cursors.etag = fresh, fresh.etag
        assert job is not None  # the first read sends no etag, so it is never a 304
        update = Update(job=job, changed=fresh is not None)
        if metrics and update.changed:
            update.metrics, cursors.metrics = drain(
                lambda after: client.metrics(job_id, after=after), cursors.metrics
            )
        if events and update.changed:
            update.events, cursors.events = drain(
                lambda after: client.events(job_id, after=after), cursors.events
            )
        if on_update is not None and (update.changed or update.metrics or update.events):
            on_update(update)
        if job.finished:
            return job
        if deadline is not None and clock() >= deadline:
            raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout} s")
        sleep(interval)
