"""The worker's sink: what a run reports goes to the database, cancellation comes from it.

Every write is a short transaction of its own (a job runs for hours; a session held that long
would pin a connection and, on SQLite, block the API). Progress and the stop check are throttled
to about once a second whatever the engine's pace.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from core.sink import Progress, Sink
from store.db import session_scope
from store.jobs import add_event, record_metrics, touch, transition
from store.models import Job

log = logging.getLogger(__name__)

OWNED = ("starting", "running")  # the states in which a worker may still be working on a job
METRIC_RETRY_S = (1.0, 3.0, 10.0)  # a short database outage must not fail hours of training


class DbSink(Sink):
    def __init__(
        self,
        db_url: str,
        job_id: str,
        worker_id: str,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db_url, self.job_id, self.worker_id = db_url, job_id, worker_id
        self.interval_s = interval_s
        self.clock = clock
        self.artifacts: list[tuple[str, Path]] = []
        self.last_progress: dict[str, Any] | None = None
        self.lease_lost = False
        self.cancel_seen = False
        self._running = False
        self._progress_at = -math.inf
        self._checked_at = -math.inf

    # ---------------------------------------------------------------- reporting

    def progress(self, progress: Progress) -> None:
        self.last_progress = progress.as_dict()
        now = self.clock()
        if self._running and now - self._progress_at < self.interval_s:
            return
        self._progress_at = now
        try:
            with session_scope(self.db_url) as session:
                if not self._running:
                    # the first sign of training: starting -> running (a cancelling job stays so)
                    transition(
                        session,
                        self.job_id,
                        ("starting",),
                        "running",
                        actor=self.worker_id,
                        message="training",
                        lease_owner=self.worker_id,
                    )
                    self._running = True
                touch(session, self.job_id, lease_owner=self.worker_id, progress=self.last_progress)
        except SQLAlchemyError as e:  # progress is advisory: a database hiccup must not end a job
            log.warning("job %s: progress not saved: %s", self.job_id, e)

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if math.isfinite(v)}
        if len(finite) < len(values):
            # SQLite stores NaN as NULL (the column is NOT NULL); the loss check reports divergence
            dropped = sorted(set(values) - set(finite))
            self.log(f"{stage} epoch {epoch}: non-finite values not stored: {', '.join(dropped)}")
        # keyed by (job, stage, epoch, step, name): an epoch replayed after a resume overwrites,
        # so retrying a write whose outcome is unknown is safe
        for delay in (*METRIC_RETRY_S, None):
            try:
                with session_scope(self.db_url) as session:
                    record_metrics(session, self.job_id, stage, epoch, step, finite)
                return
            except OperationalError as e:
                if delay is None:
                    raise
                log.warning("job %s: metrics not saved (%s); retrying in %ss", self.job_id, e, delay)
                time.sleep(delay)

    def artifact(self, name: str, path: Path) -> None:
        # uploaded once the run has succeeded, from the report's list (which also has the report)
        self.artifacts.append((name, path))

    def log(self, message: str) -> None:
        log.info("job %s: %s", self.job_id, message)
        try:
            with session_scope(self.db_url) as session:
                add_event(session, self.job_id, "log", message, actor=self.worker_id)
        except SQLAlchemyError as e:
            log.warning("job %s: log line not saved: %s", self.job_id, e)

    # ---------------------------------------------------------------- cancellation

    def should_stop(self) -> bool:
        """True once the job is ``cancelling`` or this worker no longer holds its lease."""
        if self.cancel_seen or self.lease_lost:
            return True
        now = self.clock()
        if now - self._checked_at < self.interval_s:
            return False
        self._checked_at = now
        try:
            with session_scope(self.db_url) as session:
                job = session.get(Job, self.job_id)
                status, owner = (job.status, job.lease_owner) if job else (None, None)
        except SQLAlchemyError as e:
            log.warning("job %s: cannot read its status: %s", self.job_id, e)
            return False
        if status == "cancelling" and owner == self.worker_id:
            self.cancel_seen = True
        elif status not in OWNED or owner != self.worker_id:
            # reaped (lease expired) and maybe claimed by another worker: stop writing at once
            log.warning("job %s: lease lost (status %s, owner %s)", self.job_id, status, owner)
            self.lease_lost = True
        return self.cancel_seen or self.lease_lost
