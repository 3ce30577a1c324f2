"""Publishes committed jobs to the broker and reaps jobs whose worker was lost (DESIGN.md §4).

Commit first, publish second: the API commits a job row, then publishes its id. If that publish
fails (broker down), the row stays ``queued`` with no ``published_at`` and the dispatcher publishes
it on a later pass; jobs the reaper sends back to ``retrying`` are republished the same way.
Publishing twice is harmless: a duplicate delivery finds nothing to claim. Torch-free.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from store.db import session_scope
from store.jobs import mark_published, reap_expired, to_publish
from store.pool import mark_lost, stranded
from store.settings import Settings

log = logging.getLogger(__name__)

PublishFn = Callable[[str, str], None]  # (job_id, job.queue) -> None; raises if the broker is down


def dispatch_once(
    db_url: str, publish_fn: PublishFn, limit: int = 100, republish_after_s: float | None = None
) -> int:
    """Publish jobs waiting for the broker; returns how many were published.

    With ``republish_after_s``, queued jobs whose message the broker seems to have lost
    (``store.pool.stranded``) are published again too.

    Each job is marked in its own transaction right after its publish, so a crash in between
    only causes a duplicate delivery. The first failed publish ends the pass: the broker is
    most likely down, and the remaining jobs wait for the next one.
    """
    with session_scope(db_url) as session:
        jobs = to_publish(session, limit)
        if republish_after_s is not None:
            lost = stranded(session, republish_after_s)
            for job in lost:
                log.warning(
                    "job %s: queued %ss with a matching worker idle; publishing it again",
                    job.id,
                    republish_after_s,
                )
            jobs += lost
        pending = [(job.id, job.queue) for job in jobs]
    published = 0
    for job_id, queue in pending:
        try:
            publish_fn(job_id, queue)
        except Exception as e:
            log.warning("could not publish job %s (%s); will retry on the next pass", job_id, e)
            break
        with session_scope(db_url) as session:
            mark_published(session, job_id)
        published += 1
    if published:
        log.info("published %d job(s)", published)
    return published


def reap_once(db_url: str, worker_timeout_s: float | None = None) -> list[str]:
    """Jobs with an expired lease: back to ``retrying``, or ``failed``/``cancelled`` (store.jobs).

    With ``worker_timeout_s``, workers silent that long are marked lost first, which ends their
    leases at once: their jobs are reaped in the same pass.
    """
    with session_scope(db_url) as session:
        if worker_timeout_s is not None:
            for worker_id in mark_lost(session, worker_timeout_s):
                log.warning("worker %s lost: no heartbeat for %ss", worker_id, worker_timeout_s)
        reaped = reap_expired(session)
    for job_id in reaped:
        log.warning("reaped job %s: its worker stopped renewing the lease", job_id)
    return reaped


class Dispatcher:
    """Runs the reaper, then the dispatcher, every ``settings.dispatch_interval_s``, in a thread."""

    def __init__(self, settings: Settings, publish_fn: PublishFn) -> None:
        self.settings = settings
        self.publish_fn = publish_fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Dispatcher:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="distillery-dispatcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def tick(self) -> None:
        """One pass; errors are logged, never raised, so a database hiccup does not end the loop."""
        url = self.settings.db_url
        try:
            reap_once(url, self.settings.worker_timeout_s)
        except Exception:
            log.exception("reaper pass failed")
        try:
            dispatch_once(url, self.publish_fn, republish_after_s=self.settings.republish_after_s)
        except Exception:
            log.exception("dispatcher pass failed")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.settings.dispatch_interval_s)


def run_dispatcher(settings: Settings, parent_pid: int | None = None) -> None:
    """A dispatcher as a process of its own (``distill worker --dispatcher``), until its parent exits.

    A process rather than a thread of the worker: the worker forks a child per job, and a fork
    must not inherit database connections that another thread is using.
    """
    from worker.celery_app import make_celery, publish

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_celery(settings)
    dispatcher = Dispatcher(settings, lambda job_id, queue: publish(app, job_id, queue))
    while parent_pid is None or os.getppid() == parent_pid:  # until the worker that started us is gone
        dispatcher.tick()
        time.sleep(settings.dispatch_interval_s)
