"""The worker's sink: what a run reports goes to the database, cancellation comes from it.

Every write is a short transaction of its own (a job runs for hours; a session held that long
would pin a connection and, on SQLite, block the API). Progress and the stop check are throttled
to about once a second whatever the engine's pace.

While the database is away, training goes on: metrics and log lines wait in memory (bounded), in
the order they came, and progress keeps only its latest value; all are written, oldest first,
once the database answers again. Every write can be replayed safely: metric rows are keyed by
(job, stage, epoch, step, name), and a log line carries the time it was made, by which a replay
finds it already written. The attempt gives up only when its lease would have run out
(``worker.lease.Lease``): from then on the reaper may hand the job to another worker.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from core.sink import Progress, Sink
from domain.lifecycle import report_progress, standing
from store.db import session_scope
from store.jobs import add_event_once, record_metrics
from store.models import utcnow
from worker.lease import Backoff, Lease, unavailable

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # writes held during an outage: one per epoch and stage, plus log lines


@dataclass(frozen=True)
class _Metrics:
    stage: str
    epoch: int
    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class _Line:
    message: str
    at: datetime  # the event's time, and its identity when a write is replayed


class DbSink(Sink):
    """Artifacts are not reported here: the task stores them from the report once the run succeeded."""

    def __init__(
        self,
        db_url: str,
        job_id: str,
        worker_id: str,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        lease: Lease | None = None,
        max_pending: int = MAX_PENDING,
        on_stage: Callable[[str], object] | None = None,
    ) -> None:
        self.db_url, self.job_id, self.worker_id = db_url, job_id, worker_id
        self.interval_s = interval_s
        self.clock = clock
        self.lease = lease or Lease(math.inf, clock=clock)
        self.max_pending = max_pending
        self.on_stage = on_stage  # a finished stage, for the host to keep (``worker.stages``)
        # a sweep's trial: (stage, epoch, values) -> why to stop early, or None (``domain.sweeps``)
        self.pruning: Callable[[str, int, dict[str, float]], str | None] | None = None
        self.prune_reason: str | None = None
        self.last_progress: dict[str, Any] | None = None
        self.lease_lost = False
        self.cancel_seen = False
        self.dropped = 0  # writes let go because the buffer was full
        self._pending: deque[_Metrics | _Line] = deque()
        self._progress_due = False
        self._running = False
        self._progress_at = -math.inf
        self._checked_at = -math.inf
        self._last_at = datetime.min.replace(tzinfo=UTC)
        self._down = False
        self._retry_at = -math.inf
        self._backoff = Backoff()

    @property
    def pending(self) -> int:
        return len(self._pending) + self._progress_due

    # ---------------------------------------------------------------- reporting

    def progress(self, progress: Progress) -> None:
        self.last_progress = progress.as_dict()
        now = self.clock()
        if self._running and now - self._progress_at < self.interval_s:
            return
        self._progress_at = now
        self._progress_due = True
        self._flush_if_due()

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if math.isfinite(v)}
        if len(finite) < len(values):
            # SQLite stores NaN as NULL (the column is NOT NULL); the loss check reports divergence
            dropped = sorted(set(values) - set(finite))
            self.log(f"{stage} epoch {epoch}: non-finite values not stored: {', '.join(dropped)}")
        self._queue(_Metrics(stage, epoch, step, finite))
        self._flush_if_due()
        self._report_trial(stage, epoch, finite)

    def _report_trial(self, stage: str, epoch: int, values: dict[str, float]) -> None:
        """A trial's epoch to its pruner; a failed report (the database away) only skips it."""
        if self.pruning is None or self.prune_reason is not None:
            return
        try:
            reason = self.pruning(stage, epoch, values)
        except Exception as e:
            log.warning("job %s: epoch %s not reported to its sweep: %s", self.job_id, epoch, e)
            return
        if reason:
            self.prune_reason = reason
            self.log(reason)

    def log(self, message: str) -> None:
        log.info("job %s: %s", self.job_id, message)
        # strictly increasing, so two lines of one instant are still two events
        self._last_at = max(utcnow(), self._last_at + timedelta(microseconds=1))
        self._queue(_Line(message, self._last_at))
        self._flush_if_due()

    def stage_done(self, stage: str) -> None:
        if self.on_stage is not None:
            self.on_stage(stage)

    # ---------------------------------------------------------------- cancellation

    def should_stop(self) -> bool:
        """True once the job is ``cancelling``, this worker no longer holds its lease, or the
        job's sweep pruned it."""
        if self.cancel_seen or self.lease_lost or self.prune_reason is not None:
            return True
        now = self.clock()
        if now - self._checked_at < self.interval_s:
            return False
        self._checked_at = now
        if not self._flush_if_due():  # the database is away: nobody can cancel meanwhile
            return self.lease_lost
        try:
            with session_scope(self.db_url) as session:
                held = standing(session, self.job_id, self.worker_id)
        except SQLAlchemyError as e:
            if unavailable(e):
                self._failed(e)
            else:
                log.warning("job %s: cannot read its status: %s", self.job_id, e)
            return self.lease_lost
        if held.cancel_requested:
            self.cancel_seen = True
        elif held.lost:
            # reaped (lease expired) and maybe claimed by another worker: stop writing at once
            log.warning(
                "job %s: lease lost (status %s, owner %s)", self.job_id, held.status, held.lease_owner
            )
            self.lease_lost = True
        return self.cancel_seen or self.lease_lost

    # ---------------------------------------------------------------- the buffer

    def flush(self) -> bool:
        """Write everything pending, oldest first; False if the database is (still) away."""
        while self._pending:
            item = self._pending[0]
            try:
                self._write(item)
            except SQLAlchemyError as e:
                if unavailable(e):
                    self._failed(e)
                    return False
                self._pending.popleft()
                if isinstance(item, _Metrics):
                    raise  # not an outage: a bug or a broken schema, which retrying cannot mend
                log.warning("job %s: log line not saved: %s", self.job_id, e)
                continue
            self._pending.popleft()
        if self._progress_due and not self._write_progress():
            return False
        self._recovered()
        return True

    def drain(self, sleep: Callable[[float], object] = time.sleep) -> bool:
        """Flush, retrying until the lease would run out; False if it ran out first."""
        while not self.flush():
            if self.lease.expired:
                return False
            sleep(max(0.0, min(self._retry_at - self.clock(), self.lease.left())))
        return True

    def _write(self, item: _Metrics | _Line) -> None:
        with session_scope(self.db_url) as session:
            if isinstance(item, _Metrics):
                record_metrics(session, self.job_id, item.stage, item.epoch, item.step, item.values)
            else:
                add_event_once(session, self.job_id, "log", item.message, at=item.at, actor=self.worker_id)

    def _write_progress(self) -> bool:
        try:
            with session_scope(self.db_url) as session:
                report_progress(
                    session, self.job_id, self.worker_id, self.last_progress, first=not self._running
                )
        except SQLAlchemyError as e:
            if unavailable(e):
                self._failed(e)
                return False
            log.warning("job %s: progress not saved: %s", self.job_id, e)  # advisory: let it go
        self._running = True
        self._progress_due = False
        return True

    def _queue(self, item: _Metrics | _Line) -> None:
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1:
                log.warning("job %s: write buffer full; the oldest writes are let go", self.job_id)
        self._pending.append(item)

    def _flush_if_due(self) -> bool:
        """Flush unless the database was found away too recently to try again; True if all is written."""
        if self._down and self.clock() < self._retry_at:
            self._check_lease()
            return False
        return self.flush()

    def _failed(self, error: BaseException) -> None:
        self.lease.db_failed(self.job_id, error)
        self._down = True
        self._retry_at = self.clock() + self._backoff.next()
        self._check_lease()

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            self._backoff.reset()
            self.lease.db_ok(self.job_id)

    def _check_lease(self) -> None:
        if self.lease.expired and not self.lease_lost:
            log.error("job %s: the lease ran out while the database was away; stopping", self.job_id)
            self.lease_lost = True
