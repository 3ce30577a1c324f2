"""Starting a worker: one Celery worker per GPU, serving the queues of its GPU type.

    python -m worker                     # the embedded broker and database under DISTILLERY_HOME
    python -m worker --gpu 0 --dispatcher

A worker is a Celery prefork pool of one child that takes one job and exits (the next job gets
a fresh process, so GPU memory is freed and termination and time limits work). The parent never
imports torch; ``CUDA_VISIBLE_DEVICES`` pins the worker to its GPU before anything starts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from store.settings import Settings
from worker.celery_app import make_celery, worker_queues
from worker.dispatcher import run_dispatcher
from worker.heartbeat import run_heartbeat

log = logging.getLogger(__name__)


def node_name(settings: Settings, *, gpu: str | None = None, hostname: str | None = None) -> str:
    """``distillery-<type>[-<gpu>]@<host>``: unique per GPU, so two workers on a host never clash."""
    kind = settings.gpu_type if gpu is None else f"{settings.gpu_type}-{gpu.replace(',', '-')}"
    return f"distillery-{kind}@{hostname or '%h'}"


def worker_argv(
    settings: Settings, *, gpu: str | None = None, hostname: str | None = None, loglevel: str = "INFO"
) -> list[str]:
    argv = [
        "worker",
        "-Q",
        ",".join(worker_queues(settings.gpu_type)),
        "--concurrency",
        "1",
        "--pool",
        "prefork",
        "--max-tasks-per-child",
        "1",
        "--prefetch-multiplier",
        "1",
        "-n",
        node_name(settings, gpu=gpu, hostname=hostname),
        "--loglevel",
        loglevel,
    ]
    if settings.broker.startswith(("sqla+", "sqlalchemy+")):
        # the SQLAlchemy transport has no fanout exchange: no broadcast between workers
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return argv


def _beside(target: Callable[..., None], *args: object, name: str) -> BaseProcess:
    """A helper process beside the worker's parent; spawned, so no connection is carried over."""
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args, name=name, daemon=True)
    proc.start()
    return proc


def start_dispatcher_process(settings: Settings) -> BaseProcess:
    """A dispatcher beside the worker (see ``run_dispatcher``)."""
    return _beside(run_dispatcher, settings, os.getpid(), name="distillery-dispatcher")


def start_worker(
    settings: Settings,
    gpu: str | None = None,
    loglevel: str = "INFO",
    *,
    hostname: str | None = None,
    dispatcher: bool = False,
) -> None:
    """Run a worker in this process until it is stopped (SIGTERM: warm shutdown)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # the child sees exactly one GPU, as cuda:0
    app = make_celery(settings)
    host = hostname or socket.gethostname()
    node = node_name(settings, gpu=gpu, hostname=host)
    helpers = [_beside(run_heartbeat, settings, node, os.getpid(), name="distillery-heartbeat")]
    if dispatcher:
        helpers.append(start_dispatcher_process(settings))
    try:
        app.worker_main(worker_argv(settings, gpu=gpu, hostname=host, loglevel=loglevel))
    finally:
        for helper in helpers:
            helper.terminate()  # the heartbeat signs the worker off on its way out
            helper.join(timeout=5)
