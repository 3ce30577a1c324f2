"""A worker's heartbeat: register in the pool, then report slots, devices and held jobs every few seconds.

It runs in a process of its own beside the Celery parent (spawned, so it shares no database
connection with the forking parent) and asks ``nvidia-smi`` about the host's GPUs: the worker's
parent never initialises CUDA. It stops when the worker's parent does.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from sqlalchemy.exc import SQLAlchemyError

from store.db import session_scope
from store.pool import heartbeat, sign_off
from store.settings import Settings
from worker.slots import Slots

log = logging.getLogger(__name__)
QUERY = "index,name,memory.total,memory.used,utilization.gpu"


def devices(slots: Slots) -> list[dict[str, object]]:
    """The host's slots as the pool shows them, each with its index: its GPUs as ``nvidia-smi``
    describes them (a GPU it does not list is still a slot), or its CPU slots."""
    if not slots.gpus:
        return [{"index": i, "name": "cpu", "memory_mb": None, "utilization": None} for i in slots.indices]
    known = {d["index"]: d for d in gpu_devices() if isinstance(d.get("index"), int)}
    return [
        known.get(i) or {"index": i, "name": f"GPU {i} (not described by nvidia-smi)"} for i in slots.indices
    ]


def gpu_devices() -> list[dict[str, object]]:
    """Every GPU ``nvidia-smi`` lists, with its index; none without it, or if it fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []  # the pool shows the host's GPUs without their details
    found: list[dict[str, object]] = []
    for line in out.strip().splitlines():
        index, name, total, used, util = (part.strip() for part in line.split(","))
        found.append(
            {
                "index": int(index),
                "name": name,
                "memory_mb": _num(total),
                "memory_used_mb": _num(used),
                "utilization": _num(util),
            }
        )
    return found


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]" on some boards


def run_heartbeat(
    settings: Settings, worker_id: str, parent_pid: int, slots: Slots | None = None, host: str | None = None
) -> None:
    """Beat every ``settings.heartbeat_s`` until the parent is gone, then sign off."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/heartbeat] %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stopping worker: sign off in `finally`
    host = host or socket.gethostname()
    slots = slots or Slots.cpu(1)
    try:
        while os.getppid() == parent_pid:
            try:
                with session_scope(settings.db_url) as session:
                    heartbeat(
                        session,
                        worker_id,
                        host=host,
                        gpu_type=settings.gpu_type,
                        devices=devices(slots),
                        slots=slots.count,
                    )
            except SQLAlchemyError as e:
                log.warning("heartbeat not recorded: %s", e)
            time.sleep(settings.heartbeat_s)
    finally:
        try:
            with session_scope(settings.db_url) as session:
                sign_off(session, worker_id)
        except SQLAlchemyError:
            pass
