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
from worker.celery_app import TASK_NAME, make_celery, queue_name, soft_time_limit
from worker.main import node_name, worker_argv
from worker.slots import Slots


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


def test_a_queue_per_host() -> None:
    assert queue_name("distillery-a100-0-1@box") == "host.distillery-a100-0-1@box"


def test_worker_argv(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, gpu_type="a100", broker_url="redis://127.0.0.1:6379/0")
    argv = worker_argv(settings, Slots.of_gpus("0,1,2,3"), hostname="box")
    assert argv[0] == "worker"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["-n"] == "distillery-a100-0-1-2-3@box"
    assert pairs["-Q"] == "host.distillery-a100-0-1-2-3@box"  # its own queue, nothing else
    assert pairs["--concurrency"] == "4"  # a process per GPU
    assert pairs["--pool"] == "prefork"
    assert pairs["--max-tasks-per-child"] == "1"
    assert pairs["--prefetch-multiplier"] == "1"
    assert "--without-mingle" not in argv  # Redis supports broadcast


def test_embedded_worker_argv_skips_broadcast(tmp_path: Path) -> None:
    argv = worker_argv(Settings(home=tmp_path), Slots.cpu(2), hostname="box")
    assert {"--without-gossip", "--without-mingle", "--without-heartbeat"} <= set(argv)
    assert "distillery-any@box" in argv and "2" in argv
    assert node_name(Settings(home=tmp_path)) == "distillery-any@%h"


@pytest.mark.parametrize(
    ("gpus", "slots", "expected"),
    [
        ("0,1,3", None, Slots((0, 1, 3), gpus=True)),
        ("2", None, Slots((2,), gpus=True)),
        (None, 3, Slots((0, 1, 2), gpus=False)),
        (None, None, Slots((0,), gpus=False)),
    ],
)
def test_slots_from_the_command_line(gpus: str | None, slots: int | None, expected: Slots) -> None:
    assert Slots.of(gpus, slots) == expected


@pytest.mark.parametrize(("gpus", "slots"), [("0,1", 2), ("a,b", None), ("0,0", None), ("", None), (None, 0)])
def test_bad_slots_are_refused(gpus: str | None, slots: int | None) -> None:
    with pytest.raises(ValueError):
        Slots.of(gpus, slots)


def test_only_a_gpu_host_pins_its_jobs_devices() -> None:
    assert Slots.of_gpus("4,5").visible([5]) == [5]
    assert Slots.cpu(2).visible([1]) is None


def test_start_worker_pins_its_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class FakeApp:
        slots: Slots

        def worker_main(self, argv: list[str]) -> None:
            seen["argv"] = argv
            seen["cuda"] = os.environ.get("CUDA_VISIBLE_DEVICES")
            seen["order"] = os.environ.get("CUDA_DEVICE_ORDER")
            seen["slots"] = self.slots

    monkeypatch.setattr(worker_main, "make_celery", lambda settings: FakeApp())
    monkeypatch.setattr(worker_main, "_beside", lambda *args, **kwargs: _NoHelper())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "")
    worker_main.start_worker(Settings(home=tmp_path), Slots.of_gpus("3,5"), loglevel="DEBUG")
    assert (seen["cuda"], seen["order"]) == ("3,5", "PCI_BUS_ID")  # numbered as nvidia-smi does
    assert seen["slots"] == Slots((3, 5), gpus=True)  # the children pin each job's GPUs from it
    # the concrete host name: the heartbeat registers the worker under the same node name
    assert f"distillery-any-3-5@{socket.gethostname()}" in seen["argv"]
    assert "DEBUG" in seen["argv"]


class _NoHelper:
    def terminate(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


def test_task_is_registered_under_its_name(tmp_path: Path) -> None:
    import worker.tasks  # noqa: F401  (the worker imports it through ``include``)

    app = make_celery(Settings(home=tmp_path))
    assert TASK_NAME in app.tasks
