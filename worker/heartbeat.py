"""A worker's heartbeat: register in the pool, then report devices and the held job every few seconds.

It runs in a process of its own beside the Celery parent (spawned, so it shares no database
connection with the forking parent) and asks ``nvidia-smi`` about the GPUs: the worker's parent
never initialises CUDA. It stops when the worker's parent does.
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

log = logging.getLogger(__name__)
QUERY = "index,name,memory.total,memory.used,utilization.gpu"


def gpu_devices() -> list[dict[str, object]]:
    """The GPUs this worker may use (``CUDA_VISIBLE_DEVICES``), or one CPU entry without any."""
    if shutil.which("nvidia-smi") is None:
        return [{"name": "cpu", "memory_mb": None, "utilization": None}]
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return [{"name": "unknown GPU (nvidia-smi failed)", "memory_mb": None, "utilization": None}]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    allowed = None if visible is None else {v.strip() for v in visible.split(",")}
    devices: list[dict[str, object]] = []
    for line in out.strip().splitlines():
        index, name, total, used, util = (part.strip() for part in line.split(","))
        if allowed is None or index in allowed:
            devices.append(
                {
                    "index": int(index),
                    "name": name,
                    "memory_mb": _num(total),
                    "memory_used_mb": _num(used),
                    "utilization": _num(util),
                }
            )
    return devices


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]" on some boards


def run_heartbeat(settings: Settings, worker_id: str, parent_pid: int) -> None:
    """Beat every ``settings.heartbeat_s`` until the parent is gone, then sign off."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/heartbeat] %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stopping worker: sign off in `finally`
    host = socket.gethostname()
    try:
        while os.getppid() == parent_pid:
            try:
                with session_scope(settings.db_url) as session:
                    heartbeat(
                        session, worker_id, host=host, gpu_type=settings.gpu_type, devices=gpu_devices()
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
