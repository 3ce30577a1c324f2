"""The engine server (``worker.engine_server``): a real server process, real jobs forked from it.

What a job's process must still be when it is forked rather than started afresh: the server's
child (not the task's), with the job's environment and directory and none of the service's
settings, confined, its report and messages relayed as before, a kill by someone else told as
the out-of-memory killer's, and a task that cannot reach the server still running its job."""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.errors import OutOfMemoryError
from core.sink import Progress
from tests.service import TINY_JOB
from tests.worker.test_confine import Recorder
from worker.confine import abi
from worker.engine_process import run_engine_process
from worker.engine_server import EngineServer, ServedEngine

SECRET = "postgresql://u:hunter2@db/x"


@pytest.fixture(scope="module")
def server() -> Iterator[EngineServer]:
    os.environ["DISTILLERY_DATABASE_URL"] = SECRET  # what the worker's parent holds
    try:
        started = EngineServer.start()
    finally:
        del os.environ["DISTILLERY_DATABASE_URL"]
    try:
        assert started.ready(120), "the engine server did not start listening"
        yield started
    finally:
        started.stop()


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each job's process was when the server had just forked it (read from /proc)."""
    seen: list[dict[str, Any]] = []
    real_init = ServedEngine.__init__

    def init(self: ServedEngine, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        seen.append({"pid": self.pid, "ppid": int(stat.rsplit(")", 1)[1].split()[1])})

    monkeypatch.setattr(ServedEngine, "__init__", init)
    return seen


def job(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(TINY_JOB)
    spec["export"] = ["safetensors"]
    return spec | changes


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_server_holds_none_of_the_services_settings(server: EngineServer) -> None:
    env = environ(server.proc.pid)
    assert SECRET not in json.dumps(env) and "DISTILLERY_DATABASE_URL" not in env
    assert env["TMPDIR"] == str(server.folder)
    assert server.folder.stat().st_mode & 0o077 == 0  # the socket's folder is this user's alone


def test_a_job_runs_forked_from_the_server(
    server: EngineServer, forked: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "job"
    sink = Recorder(out)
    t0 = time.monotonic()
    report = run_engine_process(
        job(), out, data_root=tmp_path / "data", device="cpu", sink=sink, sandbox="auto",
        server=server.socket_path,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert [f["ppid"] for f in forked] == [server.proc.pid]  # the server's child, not this process's
    assert report["student"]["test_top1"] > 0.15
    assert ("student", TINY_JOB["distill"]["epochs"]) in sink.epochs
    assert sink.checkpointed and set(sink.checkpointed) == {1}  # acks still come before checkpoints
    assert all((out / rel).is_file() for rel in report["artifacts"].values())
    if abi() >= 1:
        assert sink.logs[0].startswith("Landlock ABI")  # confined as a fresh process is
    # its log holds what it printed; its temporary files went to its own folder
    assert (out / "engine.log").exists()
    assert took < 120


def test_the_job_runs_in_its_folder_and_reads_no_settings_from_proc(
    server: EngineServer, forked: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The child works in the job's folder; what it could read of its environment from /proc (the
    block its process started with: the server's) holds none of the service's settings."""
    out = tmp_path / "job"
    seen: dict[str, Any] = {}

    class Spy(Recorder):
        def progress(self, progress: Progress) -> None:
            if not seen:
                pid = forked[-1]["pid"]
                seen.update(env=environ(pid), cwd=os.readlink(f"/proc/{pid}/cwd"))
            super().progress(progress)

    run_engine_process(
        job(), out, data_root=tmp_path / "data", device="cpu", sink=Spy(out), sandbox="off",
        server=server.socket_path, devices=[3],
    )  # fmt: skip
    assert seen["cwd"] == str(out.resolve())
    assert SECRET not in json.dumps(seen["env"]) and "DISTILLERY_DATABASE_URL" not in seen["env"]


def test_a_kill_from_outside_is_told_as_the_out_of_memory_killer(
    server: EngineServer, forked: list[dict[str, Any]], tmp_path: Path
) -> None:
    out = tmp_path / "job"

    class Killer(Recorder):
        def progress(self, progress: Progress) -> None:
            if forked and not getattr(self, "sent", False):
                self.sent = True
                os.kill(forked[-1]["pid"], signal.SIGKILL)  # as the kernel's OOM killer would

    with pytest.raises(OutOfMemoryError):
        run_engine_process(
            job(), out, data_root=tmp_path / "data", device="cpu", sink=Killer(out), sandbox="off",
            server=server.socket_path,
        )  # fmt: skip


def test_without_a_server_the_job_starts_a_fresh_process(
    forked: list[dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "job"
    report = run_engine_process(
        job(), out, data_root=tmp_path / "data", device="cpu", sink=Recorder(out), sandbox="off",
        server=tmp_path / "no-such.sock",
    )  # fmt: skip
    assert report["student"]["test_top1"] > 0.15
    assert not forked and "engine server not reached" in caplog.text


def test_a_request_without_its_descriptors_is_refused_and_the_server_goes_on(
    server: EngineServer, tmp_path: Path
) -> None:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(server.socket_path))
        conn.sendall(b'{"env": {}, "cwd": "/"}')
        conn.settimeout(10)
        assert conn.recv(100) == b""  # closed without a fork
    out = tmp_path / "job"
    report = run_engine_process(
        job(), out, data_root=tmp_path / "data", device="cpu", sink=Recorder(out), sandbox="off",
        server=server.socket_path,
    )  # fmt: skip
    assert report["student"]["test_top1"] > 0.15
    assert server.proc.poll() is None


def test_the_server_ends_with_the_worker(tmp_path: Path) -> None:
    """A server whose parent (the worker) is gone exits instead of lingering."""
    import subprocess
    import sys

    script = (
        "import sys, time; from worker.engine_server import EngineServer; "
        "s = EngineServer.start(); print(s.proc.pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path.cwd())
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 120  # it may still be importing the engine
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    assert not alive(pid), "the engine server outlived its worker"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; its new parent reaps it
