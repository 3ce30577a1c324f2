"""The dispatcher (jobs wait in the database until the pool has room) and the reaper, on both deployments.

The module's tests share a database: each starts from an empty pool (no job waiting or running,
no worker online) and registers the workers it needs.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from store.db import session_scope
from store.locks import DISPATCH, hold
from store.models import LIVE, Job, Worker, utcnow
from store.pool import heartbeat, sign_off
from tests.worker.support import TINY, Deployment, get_job, insert_job, wait_until
from worker.celery_app import make_celery, publish, queue_name
from worker.dispatcher import Dispatcher, dispatch_once, reap_once, woken_pass_wait


def queued_messages(dep: Deployment, worker_id: str) -> int:
    """The messages waiting in one host's queue."""
    with dep.app.connection_for_read() as conn:
        return int(conn.default_channel.queue_declare(queue_name(worker_id), passive=True).message_count)


def drain(dep: Deployment, *worker_ids: str) -> None:
    with dep.app.connection_for_write() as conn:
        for worker_id in worker_ids:
            conn.default_channel.queue_purge(queue_name(worker_id))


def unreachable_broker(dep: Deployment) -> str:
    if dep.name == "embedded":
        return "sqla+sqlite:////proc/no-such-dir/broker.db"  # cannot be created
    return "redis://127.0.0.1:1/0"  # nothing listens there


@pytest.fixture(autouse=True)
def empty_pool(deployment: Deployment) -> None:
    """Earlier tests' jobs and workers are not this test's business."""
    with session_scope(deployment.db_url) as session:
        session.execute(update(Job).where(Job.status.in_(LIVE)).values(status="cancelled"))
        session.execute(update(Worker).values(status="offline"))
    drain(deployment, "cpu@h", "gpu@h", "w@h")


def online(dep: Deployment, *workers: tuple[str, str]) -> None:
    """(worker id, GPU type): registered as a worker's heartbeat does it."""
    with session_scope(dep.db_url) as session:
        for worker_id, gpu_type in workers:
            heartbeat(session, worker_id, host="h", gpu_type=gpu_type, devices=[{"name": "cpu"}])


def test_publishes_each_job_to_the_queue_of_the_host_it_is_placed_on(deployment: Deployment) -> None:
    dep = deployment
    online(dep, ("cpu@h", "any"), ("gpu@h", "a100"))
    a = insert_job(dep.db_url, TINY)
    b = insert_job(dep.db_url, TINY, queue="a100")
    assert dispatch_once(dep.db_url, dep.publish) == 2
    assert (get_job(dep.db_url, a).placed_on, get_job(dep.db_url, a).devices) == ("cpu@h", [0])
    assert (get_job(dep.db_url, b).placed_on, get_job(dep.db_url, b).devices) == ("gpu@h", [0])
    assert get_job(dep.db_url, b).published_at is not None
    assert queued_messages(dep, "cpu@h") == 1
    assert queued_messages(dep, "gpu@h") == 1
    assert dispatch_once(dep.db_url, dep.publish) == 0  # published once, not at every pass


def test_a_woken_pass_is_skipped_when_another_process_has_passed_since_the_wake_up(
    deployment: Deployment,
) -> None:
    """Every API process runs a dispatcher woken by its own submissions: a pass that started
    after a wake-up saw the job that wake-up is for, so the woken pass would only rank the queue
    again."""
    dep = deployment
    online(dep, ("w@h", "any"))
    woken = utcnow()
    job = insert_job(dep.db_url, TINY)
    with session_scope(dep.db_url) as session:
        hold(session, DISPATCH)  # another process's pass starts after the wake-up: it covers it
    assert dispatch_once(dep.db_url, dep.publish, unless_passed_since=woken) == 0
    assert get_job(dep.db_url, job).published_at is None  # (that other pass was only a lock here)
    assert dispatch_once(dep.db_url, dep.publish, unless_passed_since=utcnow()) == 1  # woken since
    assert get_job(dep.db_url, job).published_at is not None


def test_woken_passes_of_all_processes_together_are_a_gap_apart() -> None:
    """Each API process's dispatcher is woken by its own submissions: a woken pass waits until
    the gap after the last pass of any process, and is not made at all if that pass started
    after the wake-up."""
    now = utcnow()
    woken = now - timedelta(seconds=0.05)
    assert woken_pass_wait(None, woken, now, 0.3) == 0.0  # no pass yet
    assert woken_pass_wait(now - timedelta(seconds=0.1), woken, now, 0.3) == pytest.approx(0.2)
    assert woken_pass_wait(now - timedelta(seconds=2), woken, now, 0.3) == 0.0
    assert woken_pass_wait(now - timedelta(seconds=0.01), woken, now, 0.3) is None  # it saw the job
    # another host's clock ahead: never longer than the gap
    assert woken_pass_wait(now + timedelta(seconds=60), None, now, 0.3) == 0.3


def test_a_woken_pass_waits_out_the_gap_after_another_process_s_pass(deployment: Deployment) -> None:
    dep = deployment
    online(dep, ("w@h", "any"), ("cpu@h", "any"))
    dispatcher = Dispatcher(dep.settings, dep.publish)  # not started: its passes made by hand
    dispatcher._gap = 1.0
    before = time.monotonic()
    with session_scope(dep.db_url) as session:
        hold(session, DISPATCH)  # another process's pass, just now
    job = insert_job(dep.db_url, TINY)
    dispatcher.wake()
    assert dispatcher._woken()
    assert time.monotonic() - before >= 0.95  # it waited for the gap after that pass to end
    assert get_job(dep.db_url, job).published_at is not None
    later = insert_job(dep.db_url, TINY)
    dispatcher.wake()
    with session_scope(dep.db_url) as session:
        hold(session, DISPATCH)  # a pass after the wake-up: it covers it (only a lock here)
    assert not dispatcher._woken()
    assert get_job(dep.db_url, later).published_at is None
    assert dispatch_once(dep.db_url, dep.publish) == 1  # a pass would have handed it over


def test_jobs_wait_in_the_database_until_a_worker_is_free(deployment: Deployment) -> None:
    dep = deployment
    ids = [insert_job(dep.db_url, TINY) for _ in range(3)]
    assert dispatch_once(dep.db_url, dep.publish) == 0  # no worker online: nothing to give
    online(dep, ("w@h", "any"))
    assert dispatch_once(dep.db_url, dep.publish) == 1  # one worker: one job, the oldest
    assert dispatch_once(dep.db_url, dep.publish) == 0
    assert queued_messages(dep, "w@h") == 1
    assert [get_job(dep.db_url, i).published_at is not None for i in ids] == [True, False, False]


def test_job_committed_while_the_broker_is_down_is_published_later(deployment: Deployment) -> None:
    dep = deployment
    online(dep, ("w@h", "any"))
    down = make_celery(dep.settings.model_copy(update={"broker_url": unreachable_broker(dep)}))
    job_id = insert_job(dep.db_url, TINY)
    assert dispatch_once(dep.db_url, lambda i, q: publish(down, i, q)) == 0
    job = get_job(dep.db_url, job_id)
    assert (job.status, job.published_at, job.placed_on) == ("queued", None, None)  # the mark undone

    assert dispatch_once(dep.db_url, dep.publish) == 1  # the broker is back
    job = get_job(dep.db_url, job_id)
    assert job.status == "queued" and job.published_at is not None and job.placed_on == "w@h"
    assert queued_messages(dep, "w@h") == 1


def test_a_failed_publish_ends_the_pass(deployment: Deployment) -> None:
    dep = deployment
    online(dep, *[(f"w{i}@h", "any") for i in range(3)])
    ids = [insert_job(dep.db_url, TINY) for _ in range(3)]
    sent: list[str] = []

    def flaky(job_id: str, queue: str) -> None:
        if sent:
            raise ConnectionError("broker gone")
        sent.append(job_id)

    assert dispatch_once(dep.db_url, flaky) == 1
    published = [i for i in ids if get_job(dep.db_url, i).published_at is not None]
    assert published == sent
    assert dispatch_once(dep.db_url, lambda i, q: sent.append(i)) == 2
    assert sorted(sent) == sorted(ids)


def _live_job(dep: Deployment, status: str, attempt: int, max_attempts: int, expires_in_s: float) -> str:
    return insert_job(
        dep.db_url,
        TINY,
        max_attempts=max_attempts,
        status=status,
        attempt=attempt,
        lease_owner="gone-host:123",
        lease_expires_at=utcnow() + timedelta(seconds=expires_in_s),
        published_at=utcnow(),
    )


def test_reaper(deployment: Deployment) -> None:
    dep = deployment
    online(dep, ("w1@h", "any"), ("w2@h", "any"))  # one for the job still alive, one for the retry
    retry = _live_job(dep, "running", 1, 3, -5)
    exhausted = _live_job(dep, "starting", 3, 3, -5)
    cancelling = _live_job(dep, "cancelling", 1, 3, -5)
    alive = _live_job(dep, "running", 1, 3, +60)

    reaped = reap_once(dep.db_url)
    assert sorted(reaped) == sorted([retry, exhausted, cancelling])

    job = get_job(dep.db_url, retry)
    assert job.status == "retrying" and job.published_at is None
    job = get_job(dep.db_url, exhausted)
    assert job.status == "failed" and job.error is not None and job.error["type"] == "worker_lost"
    job = get_job(dep.db_url, cancelling)
    assert job.status == "cancelled" and job.error is not None and job.error["type"] == "cancelled"
    assert get_job(dep.db_url, alive).status == "running"
    assert reap_once(dep.db_url) == []

    # the retrying job goes back to the broker and to ``queued``
    sent: list[str] = []
    dispatch_once(dep.db_url, lambda i, q: sent.append(i))
    assert sent == [retry]
    assert get_job(dep.db_url, retry).status == "queued"


def test_dispatcher_thread_reaps_and_publishes(deployment: Deployment) -> None:
    dep = deployment
    online(dep, ("w1@h", "any"), ("w2@h", "any"))
    sent: list[str] = []
    lock = threading.Lock()

    def collect(job_id: str, queue: str) -> None:
        with lock:
            sent.append(job_id)

    expired = _live_job(dep, "running", 1, 3, -1)
    fresh = insert_job(dep.db_url, TINY)
    settings = dep.settings.model_copy(update={"dispatch_interval_s": 0.1})
    dispatcher = Dispatcher(settings, collect).start()
    try:
        wait_until(lambda: {expired, fresh} <= set(sent), 10, "both jobs published")
    finally:
        dispatcher.stop()
    assert sent.count(fresh) == 1
    assert get_job(dep.db_url, expired).status == "queued"


def test_a_wake_runs_a_pass_at_once(deployment: Deployment) -> None:
    """After a submit the API wakes its dispatcher: the job need not wait for the interval."""
    dep = deployment
    online(dep, ("w1@h", "any"), ("w2@h", "any"))
    sent: list[str] = []
    settings = dep.settings.model_copy(update={"dispatch_interval_s": 3600.0})
    first = insert_job(dep.db_url, TINY)
    dispatcher = Dispatcher(settings, lambda i, q: sent.append(i)).start()
    try:
        wait_until(lambda: first in sent, 10, "the first pass")  # the next is an hour away
        second = insert_job(dep.db_url, TINY)
        dispatcher.wake()
        wait_until(lambda: second in sent, 10, "the job published after a wake")
    finally:
        dispatcher.stop()
    assert sent == [first, second]


def test_dispatcher_survives_errors(deployment: Deployment, caplog: Any) -> None:
    dispatcher = Dispatcher(
        deployment.settings.model_copy(update={"database_url": "sqlite:////proc/x/y.db"}), print
    )
    dispatcher.tick()  # logged, not raised
    assert "failed" in caplog.text


def test_a_message_the_broker_lost_is_published_again(deployment: Deployment) -> None:
    """A job handed to a host long ago, with that host online all that time: published again there."""
    dep = deployment
    online(dep, ("w@h", "any"))
    job_id = insert_job(dep.db_url, TINY)
    assert dispatch_once(dep.db_url, dep.publish) == 1
    drain(dep, "w@h")  # the broker loses the message
    assert dispatch_once(dep.db_url, dep.publish, republish_after_s=300) == 0  # not long enough yet
    with session_scope(dep.db_url) as session:
        long_ago = utcnow() - timedelta(seconds=600)
        session.get(Job, job_id).published_at = long_ago  # type: ignore[union-attr]
        session.get(Worker, "w@h").started_at = long_ago  # type: ignore[union-attr]
    assert dispatch_once(dep.db_url, dep.publish, republish_after_s=300) == 1
    assert queued_messages(dep, "w@h") == 1
    job = get_job(dep.db_url, job_id)
    assert job.published_at is not None and job.published_at.replace(tzinfo=None) > long_ago.replace(
        tzinfo=None
    )  # SQLite: naive
    assert (job.placed_on, job.devices) == ("w@h", [0])  # the same host, the same devices
    assert dispatch_once(dep.db_url, dep.publish, republish_after_s=300) == 0  # once per period


def test_a_job_handed_to_a_host_that_stopped_goes_to_another(deployment: Deployment) -> None:
    dep = deployment
    online(dep, ("w@h", "any"))
    job_id = insert_job(dep.db_url, TINY)
    sent: list[tuple[str, str]] = []
    assert dispatch_once(dep.db_url, lambda i, w: sent.append((i, w))) == 1
    with session_scope(dep.db_url) as session:
        sign_off(session, "w@h")  # stopped before it took the job
    online(dep, ("cpu@h", "any"))
    assert dispatch_once(dep.db_url, lambda i, w: sent.append((i, w))) == 0  # still handed to w@h
    reap_once(dep.db_url)  # gives it back
    assert dispatch_once(dep.db_url, lambda i, w: sent.append((i, w))) == 1
    assert sent == [(job_id, "w@h"), (job_id, "cpu@h")]
    assert get_job(dep.db_url, job_id).placed_on == "cpu@h"


def test_after_a_database_outage_workers_get_a_whole_timeout_before_they_are_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Heartbeats fail during an outage like everything else: the first passes after it must
    not mark every worker lost (and take its job) before it could be heard from again."""
    from store.settings import Settings
    from worker import dispatcher as module

    asked: list[float | None] = []
    down = [True]

    def reap(_url: str, worker_timeout_s: float | None = None) -> list[str]:
        asked.append(worker_timeout_s)
        if down[0]:
            raise ConnectionError("connection refused")
        return []

    clock = [1000.0]
    monkeypatch.setattr(module, "reap_once", reap)
    monkeypatch.setattr(module, "dispatch_once", lambda *a, **k: 0)
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    dispatcher = Dispatcher(Settings(database_url="sqlite://", worker_timeout_s=30), lambda *a: None)
    dispatcher.tick()  # down from the start
    down[0] = False
    dispatcher.tick()  # back: this pass and those of the next 30 s mark nobody lost
    clock[0] += 29
    dispatcher.tick()
    clock[0] += 2
    dispatcher.tick()
    assert asked == [30, None, None, 30]
