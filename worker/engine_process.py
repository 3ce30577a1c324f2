"""A job's engine runs in a process of its own, confined (``worker.confine``) before it acts on
the job.

The task's process keeps what the job must not reach: the database session, the broker, the
settings with their passwords. It has the host's engine server fork the child
(``worker.engine_server``, the engine already imported) or, without one, starts
``python -m worker.engine_process``; either way with a clean environment. It sends the child
the job on stdin, and relays what the engine reports (progress, metrics, artifacts, log lines,
then the report or a typed error) from a pipe of its own to the task's sink, one JSON object a
line. A stop request (cancellation) goes back as a ``stop`` line on the child's stdin, and each
epoch's metrics are acknowledged by an ``ack`` line once the sink has them; the child exits at
once if that pipe closes (its parent died).

A child that dies without a word is explained from its exit status: SIGKILL that the task did
not send is the kernel's out-of-memory killer (``out_of_memory``, not retried), anything else
``internal`` with the last line the child printed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from core.errors import CancelledError, DistilleryError, OutOfMemoryError
from core.paths import named_uploads, normal
from core.sink import Progress, Sink

STOP_CHECK_S = 1.0  # how often the relay asks the sink whether to stop, when the engine is quiet
LOG_NAME = "engine.log"  # the child's stdout and stderr, in its working directory
# the memory budget (core.data.loading) is the operator's to set per worker host
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "TZ", "DISTILLERY_DATA_MEMORY_BYTES")
PASSED_PREFIXES = ("CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "TORCH_", "PYTORCH_", "NCCL_")


class Process(Protocol):
    """The engine's process as the task handles it: a ``subprocess.Popen``, or one the engine
    server forked (``worker.engine_server.ServedEngine``)."""

    stdin: IO[bytes] | None

    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def kill(self) -> None: ...


class EngineFailed(DistilleryError):
    """The engine process reported (or its end implies) a failure of this ``type``."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.type = error_type


class SandboxUnavailable(DistilleryError):
    type = "sandbox_unavailable"


# ---------------------------------------------------------------- the task's side


def run_engine_process(
    spec: dict[str, Any],
    out_dir: Path,
    *,
    data_root: Path,
    device: str,
    sink: Sink,
    sandbox: str,
    devices: list[int] | None = None,
    server: Path | None = None,
) -> dict[str, Any]:
    """Run the job in a confined child process; its report, or the engine's typed error.

    ``devices``: the GPU indices the scheduler placed the job on; the child sees exactly those
    (``CUDA_VISIBLE_DEVICES``). None on a CPU host, or to keep what the worker sees. ``server``:
    the socket of the worker's engine server (``worker.engine_server``), which forks the child
    with the engine already imported; without one, or when it does not answer, a fresh
    interpreter is started."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tmp").mkdir(exist_ok=True)
    request = {
        "spec": spec,
        "out_dir": str(out_dir.resolve()),
        "data_root": str(data_root.resolve()),
        "inputs": [normal(path) for _field, path in named_uploads(spec)],
        "device": device,
        "sandbox": sandbox,
    }
    read_fd, write_fd = os.pipe()
    with (out_dir / LOG_NAME).open("ab") as log:
        proc = _start(server, log, write_fd, child_env(out_dir / "tmp", devices), out_dir)
    os.close(write_fd)
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        proc.stdin.flush()
        return _relay(proc, read_fd, sink, out_dir / LOG_NAME)
    finally:
        os.close(read_fd)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()


def _start(server: Path | None, log: IO[bytes], write_fd: int, env: dict[str, str], cwd: Path) -> Process:
    if server is not None:
        from worker.engine_server import ServedEngine, ServerUnavailable

        try:
            return ServedEngine(server, env=env, cwd=cwd, log_fd=log.fileno(), message_fd=write_fd)
        except ServerUnavailable as e:
            logging.getLogger(__name__).warning("engine server not reached (%s): a fresh process", e)
    return subprocess.Popen(
        [sys.executable, "-m", "worker.engine_process", str(write_fd)],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=log,
        pass_fds=(write_fd,),
        env=env,
        cwd=cwd,
    )


def child_env(tmp: Path, devices: list[int] | None = None) -> dict[str, str]:
    """What the child may know of the environment: nothing of the service's settings; the GPUs
    it was given, when the scheduler gave it some."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith(PASSED_PREFIXES)}
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
    return env | {"HOME": str(tmp), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"}


def _relay(proc: Process, fd: int, sink: Sink, log: Path) -> dict[str, Any]:
    pending, stop_sent = b"", False
    while True:
        ready, _, _ = select.select([fd], [], [], STOP_CHECK_S)
        if not stop_sent and sink.should_stop():
            stop_sent = _tell(proc, b"stop\n")
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:  # the child has closed its end: it ended
            raise _silent_end(proc.wait(), log)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            ended = _deliver(json.loads(line), sink, lambda: _tell(proc, b"ack\n"))
            if ended is not None:
                return ended


def _tell(proc: Process, line: bytes) -> bool:
    try:
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.flush()
    except (BrokenPipeError, OSError):
        pass  # it is ending anyway
    return True


def _deliver(message: dict[str, Any], sink: Sink, ack: Callable[[], object]) -> dict[str, Any] | None:
    """Hands one message to the sink; the report once the run is over."""
    kind = message.pop("kind")
    if kind == "progress":
        sink.progress(Progress(**message))
    elif kind == "metrics":
        sink.metrics(message["stage"], message["epoch"], message["step"], message["values"])
        ack()  # the engine writes its epoch checkpoint only once the sink has the epoch's metrics
    elif kind == "artifact":
        sink.artifact(message["name"], Path(message["path"]))
    elif kind == "log":
        sink.log(message["message"])
    elif kind == "stage":
        sink.stage_done(message["stage"])
    elif kind == "done":
        report: dict[str, Any] = message["report"]
        return report
    elif kind == "error":
        if message["type"] == CancelledError.type:
            raise CancelledError(message["message"])
        raise EngineFailed(message["type"], message["message"])
    return None


def _silent_end(status: int, log: Path) -> DistilleryError:
    if status == -signal.SIGKILL:
        return OutOfMemoryError(
            "the engine process was killed (SIGKILL), most likely by the kernel's out-of-memory "
            "killer: the job needed more memory than this machine could give it"
        )
    how = f"signal {signal.Signals(-status).name}" if status < 0 else f"status {status}"
    return EngineFailed("internal", f"the engine process ended with {how}: {_last_line(log)}")


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return lines[-1][:500] if lines else "(no output)"


# ---------------------------------------------------------------- the child's side


class PipeSink(Sink):
    """The engine's sink in the child: everything goes up the pipe; stop comes down stdin.

    ``metrics`` returns once the task's sink has them (an ``ack`` line), as the sink contract
    asks: the trainer writes an epoch's checkpoint right after its metrics, and a kill between
    the two must replay the epoch rather than resume past metrics that were never stored.
    """

    def __init__(self, send: Callable[..., None], stop: threading.Event, acks: queue.Queue[None]) -> None:
        self.send, self.stop, self.acks = send, stop, acks

    def progress(self, progress: Progress) -> None:
        self.send(kind="progress", **progress.as_dict())

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        self.send(kind="metrics", stage=stage, epoch=epoch, step=step, values=values)
        self.acks.get()  # the task's process dying ends this one (``_watch_parent``)

    def artifact(self, name: str, path: Path) -> None:
        self.send(kind="artifact", name=name, path=str(path))

    def log(self, message: str) -> None:
        self.send(kind="log", message=message)

    def stage_done(self, stage: str) -> None:
        self.send(kind="stage", stage=stage)

    def should_stop(self) -> bool:
        return self.stop.is_set()


def _watch_parent(stdin: IO[str], stop: threading.Event, acks: queue.Queue[None]) -> None:
    for line in stdin:
        if line.strip() == "stop":
            stop.set()
        elif line.strip() == "ack":
            acks.put(None)
    os._exit(70)  # stdin closed: the task's process is gone, so is any use for this run


def _confine(request: dict[str, Any]) -> str:
    mode = request["sandbox"]
    if mode == "off":
        return "engine process not confined (DISTILLERY_SANDBOX=off)"
    from worker.confine import SandboxUnavailable as NoLandlock
    from worker.confine import confine, isolate_network, policy_for

    data_root = Path(request["data_root"])
    inputs = [data_root / path for path in request["inputs"]]
    policy = policy_for(Path(request["out_dir"]), data_root, inputs)
    said = ""
    tcp = int(request["spec"].get("resources", {}).get("gpus", 1)) > 1  # data-parallel ranks talk TCP
    if tcp:
        try:
            isolate_network()
            for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
                os.environ.setdefault(name, "lo")  # the only interface there is
        except NoLandlock as e:
            if mode == "required":
                raise SandboxUnavailable(f"{e}, and DISTILLERY_SANDBOX=required") from None
            said = f"; data-parallel ranks NOT network-isolated: {e} (DISTILLERY_SANDBOX=auto)"
    try:
        return confine(policy, tcp=tcp) + said
    except NoLandlock as e:
        if mode == "required":
            raise SandboxUnavailable(f"{e}, and DISTILLERY_SANDBOX=required") from None
        return f"engine process NOT confined: {e} (DISTILLERY_SANDBOX=auto)"


def main(argv: list[str]) -> None:
    out = os.fdopen(int(argv[1]), "w")
    lock = threading.Lock()

    def send(**message: Any) -> None:
        with lock:
            out.write(json.dumps(message) + "\n")
            out.flush()

    request = json.loads(sys.stdin.readline())
    stop, acks = threading.Event(), queue.Queue[None]()
    try:
        send(kind="log", message=_confine(request))  # before any thread starts and before torch
        threading.Thread(target=_watch_parent, args=(sys.stdin, stop, acks), daemon=True).start()
        from core.runner import run_job
        from core.spec import parse_spec

        report = run_job(
            parse_spec(request["spec"]),
            Path(request["out_dir"]),
            data_root=Path(request["data_root"]),
            device=request["device"],
            sink=PipeSink(send, stop, acks),
        )
        send(kind="done", report=report.model_dump(mode="json"))
    except DistilleryError as e:
        send(kind="error", type=e.type, message=str(e))
    except BaseException as e:
        send(kind="error", type="internal", message=f"{type(e).__name__}: {e}")
    out.close()


if __name__ == "__main__":
    main(sys.argv)
