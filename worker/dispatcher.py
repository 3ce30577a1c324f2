"""Hands waiting jobs to the pool as it has room, and reaps jobs whose worker was lost (DESIGN.md §4).

Jobs wait in the database, not in the broker: the API commits a ``queued`` row, and a dispatcher
pass publishes it once a host can take it, in the fair-share order of ``store.scheduler``, so no
team can fill the pool ahead of the others. The scheduler also places it: one host and the device
indices it holds there, recorded on the row; the message goes to that host's queue alone. Several
dispatchers may run (one per API process, one beside a worker): a pass holds
``store.locks.DISPATCH`` from its plan until its marks are committed, so two passes never give
away the same slot.

Mark, then publish, then commit at the end of the pass: the host's worker may claim the job as
soon as the message arrives, and its claim waits for the commit and finds the placement. A crash
before the commit only sends that pass's jobs again later (a duplicate delivery finds nothing to
claim), and a publish that fails (broker down) rolls its mark back, leaves its job waiting and ends
the pass. Dispatched jobs whose message the broker lost are published again to the same host
(``store.pool.stranded``); those whose host went away go back to waiting
(``store.pool.release_dispatched``). Each pass first advances the running sweeps
(``domain.sweeps.advance_all``): the trials it makes are handed over in the same pass. The pass
ends by storing every waiting job's place (``store.places``): reads look places up, never rank the
queue. Torch-free.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime

from domain.lifecycle import mark_published, reap_expired
from domain.sweeps import advance_all
from store import places
from store.db import session_scope
from store.locks import DISPATCH, hold, last_taken, passed_since
from store.models import utcnow
from store.pool import mark_lost, release_dispatched, stranded
from store.scheduler import plan, snapshot
from store.settings import Settings

log = logging.getLogger(__name__)

MIN_PASS_GAP_S = 0.25
"""The least time from one pass's start to the next one's, however often it is woken."""
PASS_SHARE = 5
"""And at least this many times the CPU time the last pass used (see ``Dispatcher._loop``), from
the start of the last pass of any process (``woken_pass_wait``)."""

RANK_SHARE = 10
"""A pass that wake-ups ask for ranks the places (``store.places``) only when the stored ones are
older than this many times the last ranking's wall time (the database's write counted): during a
burst at 10,000 waiting jobs, about every 0.5 s instead of every pass. Ticks always rank."""

PublishFn = Callable[[str, str], None]  # (job id, worker id) -> None; raises if the broker is down


def dispatch_once(
    db_url: str,
    publish_fn: PublishFn,
    limit: int = 100,
    republish_after_s: float | None = None,
    unless_passed_since: datetime | None = None,
    rank_share: float | None = None,
) -> int:
    """Hand the jobs the pool has room for to the broker; returns how many messages were sent.

    The lock is held while publishing: a broker that is slow to fail (a few seconds at most,
    ``worker.celery_app.PUBLISH_TIMEOUT_S``) delays other passes and, on SQLite, other writers,
    but a slot is never counted free by one pass while another is handing it over.

    With ``republish_after_s``, dispatched jobs whose message the broker seems to have lost
    (``store.pool.stranded``) are published again too (they hold their slots already).

    With ``unless_passed_since``, nothing is done if a pass (of any process) started after that
    moment: it saw everything committed before it, so it has done this pass's work.

    With ``rank_share``, a pass that hands nothing over ranks the places only if the stored ones
    are older than that many times the last ranking's time (``store.places.store``'s ``share``).
    """
    sent = 0
    broker_up = True
    with session_scope(db_url) as session:
        if unless_passed_since is not None and passed_since(session, DISPATCH, unless_passed_since):
            return 0
        hold(session, DISPATCH)  # first, before reading what it protects
        snap = snapshot(session)
        for job, placement in plan(session, limit, snap):
            try:
                with session.begin_nested():  # the mark is rolled back if the publish fails
                    if not mark_published(session, job.id, placement):
                        continue  # cancelled or deleted since the pass read it: no message
                    publish_fn(job.id, placement.worker)
            except Exception as e:
                log.warning("could not publish job %s (%s); it waits for the next pass", job.id, e)
                broker_up = False
                break
            sent += 1
        # every waiting job's place, as this pass leaves the queue (store.places)
        # (a pass that handed jobs over always ranks: it moved the queue itself)
        places.store(session, snapshot(session) if sent else snap, None if sent else rank_share)
    if sent:
        log.info("handed %d job(s) to the pool", sent)
    if republish_after_s is not None and broker_up:
        sent += _republish_stranded(db_url, publish_fn, republish_after_s)
    return sent


def _republish_stranded(db_url: str, publish_fn: PublishFn, older_than_s: float) -> int:
    """Each job marked in its own transaction right after its publish: at worst a duplicate."""
    with session_scope(db_url) as session:
        pending = stranded(session, older_than_s)
    sent = 0
    for job_id, placement in pending:
        log.warning(
            "job %s: handed to %s %ss ago and not taken; publishing it again",
            job_id,
            placement.worker,
            older_than_s,
        )
        try:
            publish_fn(job_id, placement.worker)
        except Exception as e:
            log.warning("could not publish job %s again (%s); will retry on the next pass", job_id, e)
            break
        with session_scope(db_url) as session:
            marked = mark_published(session, job_id, placement)
        sent += marked  # not if it was cancelled or taken in between: the message claims nothing
    return sent


def woken_pass_wait(
    last_pass: datetime | None, woken: datetime | None, now: datetime, gap: float
) -> float | None:
    """What a pass that wake-ups ask for does, given when the last pass of any process started
    (``store.locks.last_taken``): None if it started after the last wake-up (it saw what the
    wake-ups are for: nothing is left to do), else how many seconds to wait first (0: now).

    Every API process runs a dispatcher, each woken by its own submissions: paced by their own
    passes only, N processes would spend N times the CPU that ``PASS_SHARE`` allows on ranking
    the same queue. So a woken pass waits until ``gap`` after the last pass of any of them. The
    other pass's time is by its host's clock: the wait is never longer than ``gap``."""
    if last_pass is None:
        return 0.0
    if woken is not None and last_pass > woken:
        return None
    return min(gap, max(0.0, gap - (now - last_pass).total_seconds()))


def reap_once(db_url: str, worker_timeout_s: float | None = None) -> list[str]:
    """Jobs with an expired lease: back to ``retrying``, or ``failed``/``cancelled`` (domain.lifecycle).

    With ``worker_timeout_s``, workers silent that long are marked lost first, which ends their
    leases at once: their jobs are reaped in the same pass. Jobs handed to a host that is no
    longer online and not taken go back to waiting, to be placed elsewhere.
    """
    with session_scope(db_url) as session:
        if worker_timeout_s is not None:
            for worker_id in mark_lost(session, worker_timeout_s):
                log.warning("worker %s lost: no heartbeat for %ss", worker_id, worker_timeout_s)
        for job_id in release_dispatched(session):
            log.warning("job %s: its host is not online; back to the queue", job_id)
        reaped = reap_expired(session)
    for job_id in reaped:
        log.warning("reaped job %s: its worker stopped renewing the lease", job_id)
    return reaped


class Dispatcher:
    """Runs the reaper, then the dispatcher, every ``settings.dispatch_interval_s``, in a thread.

    ``wake()`` runs a pass at once (after a submit has committed, or a job has ended) instead of
    at the end of the interval.
    """

    def __init__(self, settings: Settings, publish_fn: PublishFn) -> None:
        self.settings = settings
        self.publish_fn = publish_fn
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False  # the last reaper pass could not reach the database
        self._recovered_at: float | None = None  # when a pass first reached it again
        self._woken_at: datetime | None = None  # the last wake-up (a commit before it wants a pass)
        self._gap = MIN_PASS_GAP_S  # from the start of one pass to the next (``_loop``)

    def start(self) -> Dispatcher:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="distillery-dispatcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Ask for a pass now; cheap and safe from any thread, several wakes make one pass."""
        self._woken_at = utcnow()
        self._wake.set()

    def tick(self) -> None:
        """One pass; errors are logged, never raised, so a database hiccup does not end the loop."""
        url = self.settings.db_url
        try:
            reap_once(url, self._lost_after())
        except Exception as e:
            if not self._failing:
                reason = (str(e).splitlines() or [type(e).__name__])[0]
                log.warning("reaper pass failed (retrying every pass): %s", reason)
            self._failing, self._recovered_at = True, None
        else:
            if self._failing:
                self._failing, self._recovered_at = False, time.monotonic()
        try:  # sweeps first: the trials a pass makes are handed over in the same tick
            advance_all(self.settings)
        except Exception:
            log.exception("sweep pass failed")
        try:
            dispatch_once(url, self.publish_fn, republish_after_s=self.settings.republish_after_s)
        except Exception:
            log.exception("dispatcher pass failed")

    def _lost_after(self) -> float | None:
        """The silence after which a worker is lost, or None (nobody is, this pass).

        A worker's heartbeats fail like everyone's while the database is away: once it is back,
        each worker gets a whole timeout to be heard from again before its jobs are taken away.
        """
        timeout = self.settings.worker_timeout_s
        if self._failing:
            return None  # if this pass reaches the database, it is the first one back
        if self._recovered_at is not None:
            if time.monotonic() - self._recovered_at < timeout:
                return None
            self._recovered_at = None
        return timeout

    def _woken(self) -> bool:
        """A pass for the wake-ups since the last: the sweeps' new trials and the queue's new jobs
        handed over, the places ranked; not the reaper's and the republisher's rounds, which keep
        the interval. Skipped if another process's pass has started since the last wake-up; held
        back until ``self._gap`` after the last pass of any process (``woken_pass_wait``). True
        if it passed."""
        try:
            advance_all(self.settings)
        except Exception:
            log.exception("sweep pass failed")
        try:
            with session_scope(self.settings.db_url) as session:
                last = last_taken(session, DISPATCH)
        except Exception:
            last = None  # the pass below reports the database's trouble
        wait = woken_pass_wait(last, self._woken_at, utcnow(), self._gap)
        if wait is None or (wait > 0 and self._stop.wait(wait)):
            return False
        try:
            dispatch_once(
                self.settings.db_url,
                self.publish_fn,
                unless_passed_since=self._woken_at,
                rank_share=RANK_SHARE,
            )
        except Exception:
            log.exception("dispatcher pass failed")
        return True

    def _loop(self) -> None:
        interval = self.settings.dispatch_interval_s
        next_tick = 0.0
        while not self._stop.is_set():
            # cleared before the pass: a wake that arrives during it asks for another one
            self._wake.clear()
            started, cpu = time.monotonic(), time.thread_time()
            passed = True
            if started >= next_tick:
                next_tick = started + interval
                self.tick()
            else:
                passed = self._woken()
            # A burst of submissions wakes it for each: passes are MIN_PASS_GAP_S apart at least,
            # and PASS_SHARE times the CPU the last one used (its own work: not a wait for the
            # lock, the database or the broker), so that ranking a long queue (store.places)
            # takes at most a fifth of a core from the API's requests: of all API processes
            # together, as woken passes also wait for the others' (woken_pass_wait; two whose
            # waits end at the same moment may both pass, one after the other).
            # (Never more than the interval: an operator who asked for passes that often gets them.)
            if passed:  # (a pass skipped or stopped while it waited says nothing of their cost)
                self._gap = min(max(MIN_PASS_GAP_S, PASS_SHARE * (time.thread_time() - cpu)), interval)
            self._stop.wait(max(0.0, started + self._gap - time.monotonic()))
            self._wake.wait(max(0.0, next_tick - time.monotonic()))


def run_dispatcher(settings: Settings, parent_pid: int | None = None) -> None:
    """A dispatcher as a process of its own (``distill worker --dispatcher``), until its parent exits.

    A process rather than a thread of the worker: the worker forks a child per job, and a fork
    must not inherit database connections that another thread is using.
    """
    from worker.celery_app import make_celery, publish

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_celery(settings)
    dispatcher = Dispatcher(settings, lambda job_id, worker_id: publish(app, job_id, worker_id))
    while parent_pid is None or os.getppid() == parent_pid:  # until the worker that started us is gone
        dispatcher.tick()
        time.sleep(settings.dispatch_interval_s)
