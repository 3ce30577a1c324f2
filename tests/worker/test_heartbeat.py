"""The heartbeat process: registers the worker, reports its devices, signs off when stopped."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from store.db import migrate, session_scope
from store.models import Worker
from store.settings import Settings
from worker.heartbeat import gpu_devices, run_heartbeat


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


def test_devices_without_a_gpu_say_cpu() -> None:
    import shutil

    if shutil.which("nvidia-smi") is None:
        assert gpu_devices() == [{"name": "cpu", "memory_mb": None, "utilization": None}]
    else:  # a machine with GPUs lists each with its name
        assert all("name" in d for d in gpu_devices())
