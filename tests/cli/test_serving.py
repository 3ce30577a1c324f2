"""``distill api --workers N`` (``cli.serving``): each process listens on a socket of its own, so
the kernel spreads new connections over the processes instead of the first one awake taking a
whole burst; a process that dies stops getting connections at once; another server already on
the port is refused; the connections accepted have ``TCP_NODELAY``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from cli.serving import bind_shared, hold_address
from tests.service import free_port

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 2


def pid_app() -> Callable[..., Awaitable[None]]:
    """An ASGI app (a factory, as the API's) that answers every request with its process id."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})

    return app


def answering_pid(port: int, timeout: float = 5) -> int:
    """The process that answers one request on a new connection."""
    with httpx.Client(timeout=timeout) as client:  # a fresh client: a fresh connection
        return int(client.get(f"http://127.0.0.1:{port}/").text)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    code = (
        "from cli.serving import serve_processes\n"
        f"serve_processes('tests.cli.test_serving:pid_app', {PROCESSES}, host='127.0.0.1', port={port}, "
        "log_level='warning')"
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:  # a file, not a pipe nobody reads: the supervisor never blocks on it
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while len(set(pids_answering(port, 10, quiet=True))) < PROCESSES:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pids_answering(port: int, connections: int, quiet: bool = False) -> list[int]:
    pids = []
    for _ in range(connections):
        try:
            pids.append(answering_pid(port))
        except httpx.HTTPError:
            if not quiet:
                raise
    return pids


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (``/proc/net/tcp``: state 0A)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A")


def test_each_process_listens_on_its_own_socket_and_new_connections_reach_them_all(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _proc = served
    assert listening_sockets(port) == PROCESSES  # one each; the supervisor's never listens
    pids = pids_answering(port, 40)
    # a hash of each connection's addresses picks the socket: 40 connections, both processes
    # (all on one: a chance of 2 in 2^40)
    assert len(set(pids)) == PROCESSES, pids


def test_a_process_that_dies_gets_no_more_connections_and_is_replaced(
    served: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, _proc = served
    pids = set(pids_answering(port, 40))
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.2)  # the kernel closes its socket as the process goes
    # every connection is answered, none waits on a dead process's socket
    after = pids_answering(port, 40)
    assert victim not in after
    deadline = time.monotonic() + 60  # the supervisor starts a replacement, on a socket of its own
    while len(set(pids_answering(port, 20)) - {victim}) < PROCESSES:
        assert time.monotonic() < deadline, "no replacement answered"
        time.sleep(0.5)
    assert listening_sockets(port) == PROCESSES


def test_a_port_another_server_listens_on_is_refused(served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, _proc = served
    with pytest.raises(OSError):
        hold_address("127.0.0.1", port).close()
    code = f"from cli.serving import serve_processes as s; s('x:y', 2, host='127.0.0.1', port={port})"
    second = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert second.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in second.stderr


def nodelay_of_an_accepted_connection(listener: socket.socket) -> int:
    """Serve ``listener`` with asyncio, as each process does, and connect once."""
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert seen, "no connection was accepted"
    return seen[0]


def test_the_processes_sockets_give_every_connection_tcp_nodelay() -> None:
    assert nodelay_of_an_accepted_connection(bind_shared("127.0.0.1", 0)) != 0
    # uvicorn's own socket for several processes (issue #3149): why the processes bind their
    # own TCP sockets; when this fails, uvicorn has mended it
    config = uvicorn.Config("api.app:create_app", factory=True, host="127.0.0.1", port=0, workers=2)
    assert nodelay_of_an_accepted_connection(config.bind_socket()) == 0
