"""Keeps a running job's lease alive, and ends a job that ignores its cancellation.

A thread of the child process that trains. Each tick renews the lease; it stops on its own once
the job is no longer this worker's (reaped, finished, claimed by another). A job left in
``cancelling`` longer than the grace period is marked cancelled here and the process exits:
the prefork pool (one task per child) then starts a fresh child, freeing the GPU.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from store.db import session_scope
from store.jobs import renew_lease, transition
from store.models import Job, as_utc, utcnow

log = logging.getLogger(__name__)

HELD = ("starting", "running", "cancelling")  # states in which a worker holds a job's lease
EXIT_CANCELLED = 75  # the child's exit status after a forced cancellation


class LeaseRenewer:
    def __init__(
        self,
        db_url: str,
        job_id: str,
        worker_id: str,
        *,
        lease_s: float,
        cancel_grace_s: float,
        exit_fn: Callable[[int], object] = os._exit,
    ) -> None:
        self.db_url, self.job_id, self.worker_id = db_url, job_id, worker_id
        self.lease_s, self.cancel_grace_s = lease_s, cancel_grace_s
        # renew well before expiry; look at cancellations often enough to honour the grace period
        self.interval_s = min(lease_s / 3, cancel_grace_s / 2)
        self.exit_fn = exit_fn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}", daemon=True)

    def start(self) -> LeaseRenewer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.tick():
                return

    def tick(self) -> bool:
        """Renew once; False when the lease is gone for good (the thread then ends)."""
        try:
            with session_scope(self.db_url) as session:
                job = session.get(Job, self.job_id)
                if job is None or job.status not in HELD or job.lease_owner != self.worker_id:
                    log.warning("job %s: lease no longer held, renewal stops", self.job_id)
                    return False
                if not self._overdue(job):
                    return renew_lease(session, self.job_id, self.worker_id, self.lease_s)
                forced = transition(
                    session,
                    self.job_id,
                    ("cancelling",),
                    "cancelled",
                    actor=self.worker_id,
                    message=f"cancelled: training did not stop within {self.cancel_grace_s:g}s",
                    lease_owner=self.worker_id,
                    finished_at=utcnow(),
                    error={"type": "cancelled", "message": "cancelled; the run was terminated"},
                )
        except SQLAlchemyError as e:
            # a database hiccup: keep trying until the lease would have expired anyway
            log.warning("job %s: lease renewal failed: %s", self.job_id, e)
            return True
        if forced:
            log.error("job %s: ignored its cancellation for too long; terminating", self.job_id)
            self.exit_fn(EXIT_CANCELLED)
        return False

    def _overdue(self, job: Job) -> bool:
        if job.status != "cancelling" or job.cancel_requested_at is None:
            return False
        waited = (utcnow() - as_utc(job.cancel_requested_at)).total_seconds()
        return waited > self.cancel_grace_s
