"""The API's processes under uvicorn's supervisor, each listening on a socket of its own.

uvicorn's supervisor binds one socket and every process listens on it. The kernel then wakes
every process for a new connection, and asyncio's loop accepts all the connections waiting at
once: whichever process wakes first takes a whole burst. Ten clients connecting together (wrk, a
dashboard opening its tabs, a CI matrix polling) landed all on one process in 2 runs of 6, and
that process then served them at one core's rate while the other sat idle: 171 submissions/s
against 267 when they were spread (bench/submit.py, PostgreSQL + Redis, same CPU per job, 5.6-6.0
ms). Here each process binds its own socket to the same address with ``SO_REUSEPORT``, and the
kernel spreads the connections among the listening sockets (by a hash of each connection's
addresses). A process that dies closes its socket with it: the kernel stops sending it
connections, and the supervisor starts a replacement, which binds one again.

The supervisor holds the address on a socket of its own, bound with ``SO_REUSEPORT`` but never
listening: it never gets a connection, it keeps the port (given as 0, it picks the one the
processes bind), and before it binds, a plain bind checks that no other server listens there (a
second ``distill api`` on the same port would otherwise share its connections silently).

The processes' sockets say they are TCP (``IPPROTO_TCP``): asyncio sets ``TCP_NODELAY`` only on
connections accepted from such sockets. Without it, Nagle's algorithm holds an answer's body
until the client acknowledges its headers: 40 ms a request on a kept-alive connection (Linux's
delayed ACK). uvicorn's own socket for several processes lacked it (uvicorn issue #3149, open):
18 submissions/s and 22 ``/healthz`` answers/s with two processes, against 102 and 1,124 with one.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

log = logging.getLogger("uvicorn.error")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_shared(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` with ``SO_REUSEPORT``, not listening yet: each
    process listens on one of these, the supervisor holds one that never listens."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restarts despite TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def hold_address(host: str, port: int) -> socket.socket:
    """The supervisor's socket: fails (``OSError``, address in use) if a server listens there."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    return bind_shared(host, port)


class OwnSocketProcess(multiprocess.Process):
    """One API process: it binds its own socket in the child, as it starts serving."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # in the child
        own = bind_shared(self.config.host, self.config.port)
        super().target([own])


class Supervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor (signals, health checks, restarts), its processes ``OwnSocketProcess``."""

    def run(self) -> None:
        # the supervisor makes its processes by this module-level name; the children are fresh
        # interpreters (spawned), so the name is replaced in this process only, while it runs
        default = multiprocess.Process
        multiprocess.Process = OwnSocketProcess  # type: ignore[misc]
        try:
            super().run()
        finally:
            multiprocess.Process = default  # type: ignore[misc]


def serve_processes(app: str, workers: int, **options: Any) -> None:
    """What ``uvicorn.run(app, factory=True, workers=workers, ...)`` does, each process on its own
    socket; fails at once if another server listens on the address."""
    config = uvicorn.Config(app, factory=True, workers=workers, **options)
    try:
        held = hold_address(config.host, config.port)
    except OSError as e:
        raise SystemExit(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from e
    config.port = held.getsockname()[1]
    with held, contextlib.suppress(KeyboardInterrupt):
        log.info("listening on http://%s:%d, each process on its own socket", config.host, config.port)
        Supervisor(config, sockets=[]).run()
