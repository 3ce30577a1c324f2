"""The dispatcher (commit first, publish later) and the reaper, on both deployments."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from store.db import session_scope
from store.models import Job, utcnow
from tests.worker.support import TINY, Deployment, get_job, insert_job, wait_until
from worker.celery_app import make_celery, publish, queue_name
from worker.dispatcher import Dispatcher, dispatch_once, reap_once


def queued_messages(dep: Deployment, gpu_type: str) -> int:
    with dep.app.connection_for_read() as conn:
        return int(conn.default_channel.queue_declare(queue_name(gpu_type), passive=True).message_count)


def drain(dep: Deployment, *gpu_types: str) -> None:
    with dep.app.connection_for_write() as conn:
        for t in gpu_types:
            conn.default_channel.queue_purge(queue_name(t))


def unreachable_broker(dep: Deployment) -> str:
    if dep.name == "embedded":
        return "sqla+sqlite:////proc/no-such-dir/broker.db"  # cannot be created
    return "redis://127.0.0.1:1/0"  # nothing listens there


def test_publishes_each_queued_job_to_its_gpu_queue(deployment: Deployment) -> None:
    dep = deployment
    drain(dep, "any", "a100")
    a = insert_job(dep.db_url, TINY)
    b = insert_job(dep.db_url, TINY, queue="a100")
    assert dispatch_once(dep.db_url, dep.publish) == 2
    assert get_job(dep.db_url, a).published_at is not None
    assert get_job(dep.db_url, b).published_at is not None
    assert queued_messages(dep, "any") == 1
    assert queued_messages(dep, "a100") == 1
    assert dispatch_once(dep.db_url, dep.publish) == 0  # published once, not at every pass
    drain(dep, "any", "a100")


def test_job_committed_while_the_broker_is_down_is_published_later(deployment: Deployment) -> None:
    dep = deployment
    drain(dep, "any")
    down = make_celery(dep.settings.model_copy(update={"broker_url": unreachable_broker(dep)}))
    job_id = insert_job(dep.db_url, TINY)
    with pytest.raises(Exception):  # noqa: B017  (whatever the transport raises)
        publish(down, job_id, "any")  # what the API tries right after its commit
    assert dispatch_once(dep.db_url, lambda i, q: publish(down, i, q)) == 0
    job = get_job(dep.db_url, job_id)
    assert (job.status, job.published_at) == ("queued", None)

    assert dispatch_once(dep.db_url, dep.publish) == 1  # the broker is back
    job = get_job(dep.db_url, job_id)
    assert job.status == "queued" and job.published_at is not None
    assert queued_messages(dep, "any") == 1
    drain(dep, "any")


def test_a_failed_publish_ends_the_pass(deployment: Deployment) -> None:
    dep = deployment
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
    assert retry in sent
    assert get_job(dep.db_url, retry).status == "queued"


def test_dispatcher_thread_reaps_and_publishes(deployment: Deployment) -> None:
    dep = deployment
    with session_scope(dep.db_url) as session:  # earlier tests' jobs are not this test's business
        for job in session.query(Job).filter(Job.published_at.is_(None)):
            job.published_at = utcnow()
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


def test_dispatcher_survives_errors(deployment: Deployment, caplog: Any) -> None:
    dispatcher = Dispatcher(
        deployment.settings.model_copy(update={"database_url": "sqlite:////proc/x/y.db"}), print
    )
    dispatcher.tick()  # logged, not raised
    assert "failed" in caplog.text


def test_a_message_the_broker_lost_is_published_again(deployment: Deployment) -> None:
    """A queued job, published long ago, with a matching worker idle all that time: published again."""
    from store.models import Worker
    from store.pool import heartbeat

    dep = deployment
    drain(dep, "any")
    job_id = insert_job(dep.db_url, TINY)
    assert dispatch_once(dep.db_url, dep.publish) == 1
    drain(dep, "any")  # the broker loses the message
    with session_scope(dep.db_url) as session:
        heartbeat(session, "w@h", host="h", gpu_type="any", devices=[{"name": "cpu"}])
    assert dispatch_once(dep.db_url, dep.publish, republish_after_s=300) == 0  # not idle long enough yet
    with session_scope(dep.db_url) as session:
        long_ago = utcnow() - timedelta(seconds=600)
        session.get(Job, job_id).published_at = long_ago  # type: ignore[union-attr]
        session.get(Worker, "w@h").idle_since = long_ago  # type: ignore[union-attr]
    assert dispatch_once(dep.db_url, dep.publish, republish_after_s=300) == 1
    assert queued_messages(dep, "any") == 1
    published = get_job(dep.db_url, job_id).published_at
    assert published is not None and published.replace(tzinfo=None) > long_ago.replace(
        tzinfo=None
    )  # SQLite: naive
    assert dispatch_once(dep.db_url, dep.publish, republish_after_s=300) == 0  # once per period
