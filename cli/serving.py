"""The API's processes under uvicorn's supervisor, with ``TCP_NODELAY`` on every connection.

uvicorn binds the listening socket of its several processes itself (``Config.bind_socket``), with
``proto`` left at 0; the connections accepted on it inherit that, and asyncio sets ``TCP_NODELAY``
only on sockets that say TCP. Without it, Nagle's algorithm holds an answer's body until the
client acknowledges its headers: 40 ms a request on a kept-alive connection (Linux's delayed
ACK). Measured here (one client, ``wrk``, PostgreSQL + Redis): 18 submissions/s and 22 ``/healthz``
answers/s with two processes, against 102 and 1,124 with one (uvicorn issue #3149, open). One
process is unaffected: asyncio binds its socket from ``getaddrinfo``, which says TCP.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess


class TcpConfig(uvicorn.Config):
    """``uvicorn.Config`` whose TCP listening socket says it is TCP (``proto`` IPPROTO_TCP)."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return sock  # a Unix socket: no Nagle to turn off
        tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        tcp.set_inheritable(True)  # the processes the supervisor starts inherit it
        return tcp


def serve_processes(app: str, workers: int, **options: Any) -> None:
    """What ``uvicorn.run(app, factory=True, workers=workers, ...)`` does, on ``TcpConfig``'s socket."""
    config = TcpConfig(app, factory=True, workers=workers, **options)
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[config.bind_socket()]).run()
