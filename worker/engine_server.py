"""The engine server: the engine imported once per worker host, a job's process forked from it.

Importing the engine (torch, torchvision's models, which pull in ``torch._dynamo``) takes
seconds; a job whose data is small trains in less. So the worker's parent starts one server
process beside it (``EngineServer.start``), with the same clean environment a job's process
gets (``worker.engine_process.child_env``: none of the service's settings) and before any job
runs. The server imports the engine, never touches CUDA (a forked child could not use it
then), and waits on a Unix socket in a private directory (mode 0700). For each job, the task's
process connects and hands over three file descriptors (the job's stdin pipe, its message
pipe, its log) and the job's environment and directory; the server forks, and the child
becomes the job's engine process exactly as ``python -m worker.engine_process`` would be: the
same request on stdin, the same messages, the same confinement (``worker.confine``), which now
comes after the imports but still before the job's spec or any of its inputs is read. A fork
costs milliseconds instead of an interpreter and the imports.

The server answers with the child's pid (and a pidfd, so that a kill can never reach a reused
pid) and, once the child ends, its exit status, the way ``subprocess`` gives it: the task's
side (``ServedEngine``) has ``poll``, ``wait`` and ``kill`` like a ``Popen``, so a kill by the
kernel's out-of-memory killer is still told from a crash. The server runs no Python thread (a
fork from a threaded process may inherit a held lock; the native pools numpy's and scipy's
OpenBLAS start at import re-initialise after a fork, as they do under every DataLoader), reaps
its children on ``SIGCHLD`` and exits when the worker's parent does. A task that cannot reach
it (not started yet, gone) starts the engine process the old way and pays the imports.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO, Any

SOCKET_NAME = "engine.sock"
CONNECT_TIMEOUT_S = 10.0  # a server that does not answer in this time is not used for the job
PARENT_CHECK_S = 1.0
# what a job's process is forked with: its stdin (requests, stop, acks), its message pipe, its log
FDS = 3
# the engine (torch, torchvision, the models, the trainer), the spec, the confinement, the child's main
PRELOAD = ("core.runner", "core.spec", "worker.confine", "worker.engine_process")


# ---------------------------------------------------------------- the worker's side


class EngineServer:
    """The server process beside a worker's parent (which never imports torch itself)."""

    def __init__(self, proc: subprocess.Popen[bytes], folder: Path) -> None:
        self.proc, self.folder = proc, folder
        self.socket_path = folder / SOCKET_NAME

    @classmethod
    def start(cls) -> EngineServer:
        from worker.engine_process import child_env

        folder = Path(tempfile.mkdtemp(prefix="distillery-engine-"))  # mode 0700: this user's only
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.engine_server", str(folder / SOCKET_NAME), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            env=child_env(folder),
            cwd=folder,
        )
        return cls(proc, folder)

    def ready(self, timeout_s: float) -> bool:
        """Waits until the server listens (its imports done); False if it did not in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.socket_path.exists():
                return True
            time.sleep(0.05)
        return self.socket_path.exists()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------- the task's side


class ServerUnavailable(Exception):
    """The server could not be reached or did not answer: start the engine process directly."""


class ServedEngine:
    """A job's engine process forked by the server, handled as a ``subprocess.Popen``:
    ``stdin``, ``poll``, ``wait``, ``kill`` and ``returncode`` (negative: the signal that ended it)."""

    def __init__(
        self, socket_path: Path, *, env: dict[str, str], cwd: Path, log_fd: int, message_fd: int
    ) -> None:
        self.returncode: int | None = None
        self.pidfd: int | None = None
        self._pending = b""
        read_fd, write_fd = os.pipe()  # the child's stdin
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(CONNECT_TIMEOUT_S)
            conn.connect(str(socket_path))
            header = json.dumps({"env": env, "cwd": str(cwd)}).encode()
            socket.send_fds(conn, [header], [read_fd, message_fd, log_fd])
            os.close(read_fd)
            read_fd = -1
            hello = self._line(conn, want_fds=True)
            self.pid = int(hello["pid"])
        except (OSError, ValueError, KeyError) as e:
            # A child forked without its pid reaching us finds its stdin closed here and exits
            # before it reads a request: it writes nothing to the job's message pipe.
            conn.close()
            if self.pidfd is not None:
                os.close(self.pidfd)
            if read_fd >= 0:
                os.close(read_fd)
            os.close(write_fd)
            raise ServerUnavailable(f"{type(e).__name__}: {e}") from None
        conn.settimeout(None)
        self._conn = conn
        self.stdin: IO[bytes] | None = os.fdopen(write_fd, "wb")

    def _line(self, conn: socket.socket, *, want_fds: bool = False) -> dict[str, Any]:
        """The server's next line (the first comes with the child's pidfd, where there is one)."""
        while b"\n" not in self._pending:
            if want_fds:
                data, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
                if fds:
                    self.pidfd = fds[0]
            else:
                data = conn.recv(4096)
            if not data:
                raise ConnectionError("the engine server closed the connection")
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._conn], [], [], 0)
            if ready or b"\n" in self._pending:
                self.wait()
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(self._conn)["exit"])
            except (OSError, ValueError, KeyError):
                self.returncode = 1  # the server died with the job: nothing better to tell
            self._close()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    def _close(self) -> None:
        self._conn.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


# ---------------------------------------------------------------- the server


def _imports() -> None:
    """The engine, imported once, before any fork, and the default dataset (MNIST-1D, which the
    package generates in a second or two) generated once: every child inherits both. Nothing here
    initialises CUDA."""
    for module in PRELOAD:
        importlib.import_module(module)
    from core.data.builtin import warm

    warm()


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def serve(socket_path: Path, parent: int) -> None:
    """Import the engine, listen, fork a child per request, while ``parent`` (the worker) lives."""
    t0 = time.monotonic()
    _imports()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = socket_path.with_suffix(".partial")
    listener.bind(str(partial))
    listener.listen(64)
    os.rename(partial, socket_path)  # the path appears once the server can answer
    print(
        f"engine server {os.getpid()}: engine imported in {time.monotonic() - t0:.1f}s, "
        f"{_threads()} native thread(s) (the BLAS libraries' pools, which fork safely), "
        f"listening on {socket_path}",
        file=sys.stderr,
        flush=True,
    )
    children: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        try:
            ready, _, _ = select.select([listener.fileno(), wake_r], [], [], PARENT_CHECK_S)
        except InterruptedError:
            ready = []
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        if listener.fileno() in ready:
            conn, _ = listener.accept()
            started = _start(conn, listener, children, (wake_r, wake_w))
            if started is not None:
                children[started] = conn
        _reap(children)


def _start(
    conn: socket.socket,
    listener: socket.socket,
    children: dict[int, socket.socket],
    wake: tuple[int, int],
) -> int | None:
    """Forks a job's engine process for one connection; its pid, or None (the connection closed)."""
    fds: list[int] = []
    try:
        conn.settimeout(CONNECT_TIMEOUT_S)
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, FDS)
        header = json.loads(data)
        if len(fds) != FDS:
            raise ValueError(f"{len(fds)} file descriptors, not {FDS}")
    except (OSError, ValueError) as e:
        print(f"engine server: a request refused: {e}", file=sys.stderr, flush=True)
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    pid = os.fork()
    if pid == 0:  # the job's engine process
        code = 1
        try:
            listener.close()
            for other in children.values():
                other.close()
            conn.close()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in wake:
                os.close(fd)
            code = _child(header, *fds)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(conn, [json.dumps({"pid": pid}).encode() + b"\n"], [pidfd] if pidfd else [])
    except OSError:
        pass  # the task is gone: its child ends when it finds its stdin closed
    finally:
        if pidfd is not None:
            os.close(pidfd)
    conn.settimeout(None)
    return pid


def _child(header: dict[str, Any], stdin_fd: int, message_fd: int, log_fd: int) -> int:
    """In the forked child: become the job's engine process (``worker.engine_process.main``)."""
    os.dup2(stdin_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(stdin_fd)
    os.close(log_fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115  (the process's own stdin, for its life)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(header["cwd"])
    os.environ.clear()
    os.environ.update(header["env"])  # its GPUs (read when CUDA starts, in this process), HOME, TMPDIR
    tempfile.tempdir = None
    from worker.engine_process import main

    main(["engine", str(message_fd)])
    return 0


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            conn.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
