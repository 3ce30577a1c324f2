"""The Celery app's configuration, queues and command line; no broker needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from store.settings import Settings
from tests.worker.support import ROOT
from worker import main as worker_main
from worker.celery_app import TASK_NAME, make_celery, queue_name, soft_time_limit, worker_queues
from worker.main import node_name, worker_argv


def test_the_publishing_side_never_imports_torch() -> None:
    # the API imports these to publish; the worker's parent imports the task module
    code = (
        "import sys, worker.celery_app, worker.dispatcher, worker.main, worker.tasks;"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_long_job_settings(tmp_path: Path) -> None:
    app = make_celery(Settings(home=tmp_path, task_time_limit_s=10_000))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.task_ignore_result
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_max_tasks_per_child == 1
    assert conf.worker_concurrency == 1
    assert conf.worker_pool == "prefork"
    assert conf.task_time_limit == 10_000
    assert 9_000 < conf.task_soft_time_limit < 10_000
    assert conf.broker_connection_retry_on_startup
    assert conf.broker_url.startswith("sqla+sqlite:///")
    assert "visibility_timeout" not in conf.broker_transport_options  # create_engine would refuse it
    assert "worker.tasks" in app.conf.include
    assert app.settings.task_time_limit_s == 10_000


def test_redis_visibility_timeout_outlasts_the_longest_job(tmp_path: Path) -> None:
    app = make_celery(Settings(home=tmp_path, broker_url="redis://127.0.0.1:6379/0", task_time_limit_s=500))
    assert app.conf.broker_transport_options["visibility_timeout"] > 500


@pytest.mark.parametrize("hard", [1, 2, 60, 7 * 24 * 3600])
def test_soft_limit_comes_first(hard: int) -> None:
    assert 1 <= soft_time_limit(hard) <= max(1, hard - 1)


def test_queues_per_gpu_type() -> None:
    assert queue_name("a100") == "gpu.a100"
    assert worker_queues("a100") == ["gpu.a100", "gpu.any"]
    assert worker_queues("any") == ["gpu.any"]


def test_worker_argv(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, gpu_type="a100", broker_url="redis://127.0.0.1:6379/0")
    argv = worker_argv(settings, gpu="1", hostname="box")
    assert argv[0] == "worker"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["-Q"] == "gpu.a100,gpu.any"
    assert pairs["--concurrency"] == "1"
    assert pairs["--pool"] == "prefork"
    assert pairs["--max-tasks-per-child"] == "1"
    assert pairs["-n"] == "distillery-a100-1@box"
    assert "--without-mingle" not in argv  # Redis supports broadcast


def test_embedded_worker_argv_skips_broadcast(tmp_path: Path) -> None:
    argv = worker_argv(Settings(home=tmp_path))
    assert {"--without-gossip", "--without-mingle", "--without-heartbeat"} <= set(argv)
    assert node_name(Settings(home=tmp_path)) == "distillery-any@%h"


def test_start_worker_pins_its_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class FakeApp:
        def worker_main(self, argv: list[str]) -> None:
            seen["argv"] = argv
            seen["cuda"] = os.environ.get("CUDA_VISIBLE_DEVICES")

    monkeypatch.setattr(worker_main, "make_celery", lambda settings: FakeApp())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test
    worker_main.start_worker(Settings(home=tmp_path), gpu="3", loglevel="DEBUG")
    assert seen["cuda"] == "3"
    # the concrete host name: the heartbeat registers the worker under the same node name
    assert f"distillery-any-3@{socket.gethostname()}" in seen["argv"]
    assert "DEBUG" in seen["argv"]


def test_task_is_registered_under_its_name(tmp_path: Path) -> None:
    import worker.tasks  # noqa: F401  (the worker imports it through ``include``)

    app = make_celery(Settings(home=tmp_path))
    assert TASK_NAME in app.tasks
