"""The heartbeat process: registers the worker, reports its devices, signs off when stopped."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from store.db import migrate, session_scope
from store.models import Worker
from store.settings import Settings
from worker.heartbeat import devices, gpu_devices, run_heartbeat
from worker.slots import Slots


def status(url: str, worker_id: str) -> str | None:
    with session_scope(url) as session:
        worker = session.get(Worker, worker_id)
        return None if worker is None else worker.status


def test_registers_then_signs_off_on_sigterm(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, heartbeat_s=0.2)
    migrate(settings.db_url)
    proc = multiprocessing.get_context("spawn").Process(
        target=run_heartbeat, args=(settings, "distillery-any@test", os.getpid()), daemon=True
    )
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while status(settings.db_url, "distillery-any@test") != "online" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(settings.db_url, "distillery-any@test") == "online"
    finally:
        proc.terminate()
        proc.join(timeout=10)
    assert status(settings.db_url, "distillery-any@test") == "offline"


def test_a_cpu_host_lists_its_slots() -> None:
    assert devices(Slots.cpu(2)) == [
        {"index": 0, "name": "cpu", "memory_mb": None, "utilization": None},
        {"index": 1, "name": "cpu", "memory_mb": None, "utilization": None},
    ]


def test_a_gpu_host_lists_its_gpus_with_their_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import heartbeat as module

    seen = [{"index": i, "name": f"GPU{i}", "memory_mb": 80.0} for i in range(4)]
    monkeypatch.setattr(module, "gpu_devices", lambda: seen)
    # its own GPUs only; one nvidia-smi does not list is still a slot of the host
    assert devices(Slots.of_gpus("1,3,7")) == [
        seen[1],
        seen[3],
        {"index": 7, "name": "GPU 7 (not described by nvidia-smi)"},
    ]


def test_every_gpu_nvidia_smi_lists_has_an_index() -> None:
    assert all(isinstance(d["index"], int) and "name" in d for d in gpu_devices())  # none without one
