"""Keeps a running job's lease alive, and ends a job that ignores its cancellation.

A thread of the child process that trains. Each tick renews the lease; it stops on its own once
the job is no longer this worker's (reaped, finished, claimed by another). A job left in
``cancelling`` longer than the grace period is marked cancelled here and the process exits:
the prefork pool (one task per child) then starts a fresh child, freeing the GPU.

While the database is away nobody can renew the lease, and nobody can take the job either (the
reaper needs the database too): the attempt keeps training and retries every write until the
lease would have run out. ``Lease`` is what the renewer, the sink and the task's endings share to
know that moment; once the database answers again, the renewer's first success extends it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from domain.lifecycle import renew
from store.db import session_scope

log = logging.getLogger(__name__)

EXIT_CANCELLED = 75  # the child's exit status after a forced cancellation
RETRY_FIRST_S, RETRY_CAP_S = 0.5, 2.0  # once the database is back, a renewal lands within seconds

T = TypeVar("T")


def unavailable(error: BaseException) -> bool:
    """The database did not answer (down, restarting, unreachable, pool exhausted): worth a retry."""
    if isinstance(error, OperationalError | DisconnectionError | PoolTimeoutError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


class Backoff:
    """Exponential delays, capped, with jitter (so workers do not retry in lockstep)."""

    def __init__(self, first_s: float = RETRY_FIRST_S, cap_s: float = RETRY_CAP_S) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.tries = 0

    def next(self) -> float:
        delay = min(self.cap_s, self.first_s * 2**self.tries)
        self.tries += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.tries = 0


class Lease:
    """This attempt's view of its lease and of the database, shared by its threads.

    ``expires`` is a local (monotonic) time measured from before the renewing request was sent,
    so it errs early: when it passes, the reaper may have handed the job to someone else.
    Outages are logged once when they start and once when they end, whoever notices.
    """

    def __init__(self, lease_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_s, self.clock = lease_s, clock
        self.expires = clock() + lease_s  # made before the claim that set the lease
        self._lock = threading.Lock()
        self._down_since: float | None = None

    def renewed(self, sent_at: float) -> None:
        with self._lock:
            self.expires = max(self.expires, sent_at + self.lease_s)

    def left(self) -> float:
        return self.expires - self.clock()

    @property
    def expired(self) -> bool:
        return self.left() <= 0

    @property
    def db_down(self) -> bool:
        return self._down_since is not None

    def db_failed(self, job_id: str, error: BaseException) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self.clock()
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        left = self.left()
        until = f"{left:.0f}s, until the lease runs out" if math.isfinite(left) else "as long as it takes"
        log.warning("job %s: database unreachable (%s); retrying for %s", job_id, reason, until)

    def db_ok(self, job_id: str) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.warning("job %s: database reachable again after %.0fs", job_id, self.clock() - since)


def until_lease_ends(
    lease: Lease,
    job_id: str,
    write: Callable[[], T],
    *,
    sleep: Callable[[float], object] = time.sleep,
) -> tuple[bool, T | None]:
    """Run ``write`` (one transaction) until it succeeds or the lease runs out: (done, result).

    Only an unreachable database is retried; any other error is raised at once.
    """
    backoff = Backoff()
    while True:
        try:
            result = write()
        except SQLAlchemyError as e:
            if not unavailable(e):
                raise
            lease.db_failed(job_id, e)
            if lease.expired:
                log.error("job %s: the lease ran out while the database was away; giving up", job_id)
                return False, None
            sleep(max(0.0, min(backoff.next(), lease.left())))
            continue
        lease.db_ok(job_id)
        return True, result


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
        lease: Lease | None = None,
    ) -> None:
        self.db_url, self.job_id, self.worker_id = db_url, job_id, worker_id
        self.lease_s, self.cancel_grace_s = lease_s, cancel_grace_s
        self.lease = lease or Lease(lease_s)
        # renew well before expiry; look at cancellations often enough to honour the grace period
        self.interval_s = min(lease_s / 3, cancel_grace_s / 2)
        self.exit_fn = exit_fn
        self.failing = False  # the last tick could not reach the database
        self._backoff = Backoff()
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
        wait = 0.0  # at once: the claim that set the lease may have been slow
        while not self._stop.wait(wait):
            if not self.tick():
                return
            # during an outage, try again promptly: the first renewal after it must beat the reaper
            wait = min(self._backoff.next(), self.interval_s) if self.failing else self.interval_s

    def tick(self) -> bool:
        """Renew once; False when the lease is gone for good (the thread then ends)."""
        sent_at = self.lease.clock()
        try:
            keep, forced = self._renew()
        except SQLAlchemyError as e:
            if unavailable(e):
                self.lease.db_failed(self.job_id, e)
            else:  # not an outage, but still no renewal: the same deadline applies
                log.warning("job %s: lease renewal failed: %s", self.job_id, e)
            self.failing = True
            if self.lease.expired:
                log.error("job %s: the lease ran out while the database was away", self.job_id)
                return False
            return True
        self.lease.db_ok(self.job_id)
        self.failing = False
        self._backoff.reset()
        if keep:
            self.lease.renewed(sent_at)
        if forced:
            log.error("job %s: ignored its cancellation for too long; terminating", self.job_id)
            self.exit_fn(EXIT_CANCELLED)
        return keep

    def _renew(self) -> tuple[bool, bool]:
        """(still held, cancellation forced) after one renewal in one transaction."""
        with session_scope(self.db_url) as session:
            keep, forced = renew(session, self.job_id, self.worker_id, self.lease_s, self.cancel_grace_s)
        if not keep and not forced:
            log.warning("job %s: lease no longer held, renewal stops", self.job_id)
        return keep, forced
