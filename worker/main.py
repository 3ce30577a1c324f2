"""Starting a worker host: one Celery worker per machine (and GPU type), a process per slot.

    python -m worker                          # the embedded broker and database under DISTILLERY_HOME
    python -m worker --gpus 0,1,2,3 --dispatcher
    python -m worker --slots 2                # a machine without GPUs: two CPU slots

A worker is a Celery prefork pool of one child per slot; each child takes one job and exits (the
next job gets a fresh process, so GPU memory is freed and termination and time limits work). It
reads only its own queue (``host.<node name>``): the scheduler decides which host runs a job and
on which of its devices. The parent never imports torch; ``CUDA_VISIBLE_DEVICES`` limits the
worker to its GPUs before anything starts, and each job's engine process sees only the GPUs the
job was placed on (``worker.tasks``). Beside the parent, an engine server imports the engine
once and forks each job's engine process (``worker.engine_server``): a job starts in
milliseconds, not in the seconds an interpreter takes to import torch.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from store.settings import Settings
from worker.celery_app import make_celery, queue_name
from worker.dispatcher import run_dispatcher
from worker.engine_server import EngineServer
from worker.heartbeat import run_heartbeat
from worker.slots import Slots

log = logging.getLogger(__name__)


def node_name(settings: Settings, *, gpu: str | None = None, hostname: str | None = None) -> str:
    """``distillery-<type>[-<gpus>]@<host>``: one worker per host and GPU type; the GPUs are part of
    the name, so that hosts split between several workers (``--gpu 0``, ``--gpu 1``) never clash."""
    kind = settings.gpu_type if gpu is None else f"{settings.gpu_type}-{gpu.replace(',', '-')}"
    return f"distillery-{kind}@{hostname or '%h'}"


def worker_argv(settings: Settings, slots: Slots, *, hostname: str, loglevel: str = "INFO") -> list[str]:
    node = node_name(settings, gpu=slots.label, hostname=hostname)
    argv = [
        "worker",
        "-Q",
        queue_name(node),
        "--concurrency",
        str(slots.count),
        "--pool",
        "prefork",
        "--max-tasks-per-child",
        "1",
        "--prefetch-multiplier",
        "1",
        "-n",
        node,
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
    slots: Slots | None = None,
    loglevel: str = "INFO",
    *,
    hostname: str | None = None,
    dispatcher: bool = False,
) -> None:
    """Run a worker host in this process until it is stopped (SIGTERM: warm shutdown)."""
    slots = slots or Slots.cpu(1)
    if slots.gpus:
        # the worker sees its GPUs only, numbered as nvidia-smi numbers them (the jobs' indices)
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in slots.indices)
    # the engine imported once for the host, its jobs' processes forked from it; started first,
    # so that it imports while the worker connects to the broker
    server = EngineServer.start() if settings.engine_server else None
    app = make_celery(settings)
    app.slots = slots  # the forked children read it: pin a job's GPUs, or not on a CPU host
    app.engine_server = server.socket_path if server else None
    host = hostname or socket.gethostname()
    node = node_name(settings, gpu=slots.label, hostname=host)
    helpers = [_beside(run_heartbeat, settings, node, os.getpid(), slots, host, name="distillery-heartbeat")]
    if dispatcher:
        helpers.append(start_dispatcher_process(settings))
    try:
        app.worker_main(worker_argv(settings, slots, hostname=host, loglevel=loglevel))
    finally:
        for helper in helpers:
            helper.terminate()  # the heartbeat signs the worker off on its way out
            helper.join(timeout=5)
        if server is not None:
            server.stop()
