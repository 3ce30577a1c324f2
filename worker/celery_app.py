"""The Celery application: broker, queues and the settings long GPU jobs need (DESIGN.md §4).

Torch-free on purpose: the API imports this module to publish job ids, and the worker's parent
process (which forks the children that train) must never touch torch or CUDA. Only the job id
travels through the broker; the database row is the source of truth.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from celery import Celery

from store.settings import Settings, get_settings
from worker.slots import Slots

TASK_NAME = "distillery.run_job"
QUEUE_PREFIX = "host."
PUBLISH_TIMEOUT_S = 5.0
SOFT_LIMIT_MARGIN_S = 300  # the soft limit fires this much earlier, so the task can record a timeout


class DistilleryCelery(Celery):
    """A Celery app that carries the service's settings, and the host's slots, to the task
    running in it."""

    settings: Settings
    slots: Slots = Slots.cpu(1)
    engine_server: Path | None = None  # the socket of the host's engine server (``worker.engine_server``)


def queue_name(worker_id: str) -> str:
    """The broker queue of one worker host (its node name): the scheduler places each job on a
    host (``Job.placed_on``) and publishes it there; no other host reads that queue."""
    return f"{QUEUE_PREFIX}{worker_id}"


def soft_time_limit(hard_s: int) -> int:
    return max(1, hard_s - min(SOFT_LIMIT_MARGIN_S, max(1, hard_s // 20)))


def transport_options(settings: Settings) -> dict[str, Any]:
    broker = settings.broker
    if broker.startswith(("sqla+", "sqlalchemy+")):
        # the SQLAlchemy transport hands its options to create_engine: only engine arguments here.
        # A long busy timeout, as the API (publisher) and the worker (consumer) share the file.
        return {"connect_args": {"timeout": 30}}
    # Redis redelivers an unacknowledged message after the visibility timeout: it must outlast the
    # longest job, or a second worker would receive a job that is still running (late acks).
    return {"visibility_timeout": settings.task_time_limit_s + 3600}


SQL_POLLING_S = 0.1  # how often an idle worker asks the embedded broker's table for a message


def _prepare_broker(url: str) -> None:
    """The embedded broker is a SQLite file: its folder must exist before the transport opens it.
    Its transport polls (Redis pushes): every ``SQL_POLLING_S`` rather than kombu's second, so that
    a dispatched job starts at once. Set on the transport's class, as its options all go to
    ``create_engine``."""
    if url.startswith(("sqla+", "sqlalchemy+")):
        from kombu.transport import sqlalchemy

        sqlalchemy.Transport.polling_interval = SQL_POLLING_S
    for prefix in ("sqla+sqlite:///", "sqlalchemy+sqlite:///"):
        if url.startswith(prefix):
            path = url.removeprefix(prefix)
            if path and path != ":memory:":
                with contextlib.suppress(OSError):  # if it cannot be made, publishing reports it
                    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def make_celery(settings: Settings | None = None) -> DistilleryCelery:
    settings = settings or get_settings()
    _prepare_broker(settings.broker)
    app = DistilleryCelery("distillery", broker=settings.broker, include=["worker.tasks"])
    app.settings = settings
    app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # a message is acknowledged only once the task is over; if the child dies, it goes back
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # a fresh child process per job (frees GPU memory, lets limits work); as many children as
        # the host has slots (``worker.main``), each taking one message at a time
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        worker_concurrency=1,
        worker_pool="prefork",
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=soft_time_limit(settings.task_time_limit_s),
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        # a broker outage must not kill hours of training: the job row, not the message, is the
        # truth, and a redelivery of a finished job finds nothing to claim
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def publish(celery: Celery, job_id: str, worker_id: str) -> None:
    """Send a job id to the queue of the worker host the scheduler placed it on. Raises (quickly)
    if the broker cannot be reached.

    Fails within a second or so when the broker is down: the job row is committed already, and
    the dispatcher publishes it later, so an API request need not wait for the broker to come back.
    """
    with celery.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=1, interval_start=0.5, timeout=PUBLISH_TIMEOUT_S)
        celery.send_task(
            TASK_NAME,
            args=[job_id],
            task_id=job_id,
            queue=queue_name(worker_id),
            producer=producer,
            retry=False,
        )


_app: DistilleryCelery | None = None


def get_app() -> DistilleryCelery:
    """The process-wide app built from the environment's settings (created on first use)."""
    global _app
    if _app is None:
        _app = make_celery(get_settings())
    return _app


def __getattr__(name: str) -> Any:
    # ``celery -A worker.celery_app worker`` looks up ``app``: build it only when asked
    if name == "app":
        return get_app()
    raise AttributeError(name)
