"""``distill api --workers N``: the connections its processes accept have ``TCP_NODELAY`` (one
process always had it; uvicorn's own socket for several loses it: ``cli.serving``)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from cli.serving import TcpConfig


def nodelay_of_an_accepted_connection(config: uvicorn.Config) -> int:
    """Serve ``config``'s bound socket with asyncio, as each process does, and connect once."""
    listener = config.bind_socket()
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


def test_the_processes_socket_gives_every_connection_tcp_nodelay() -> None:
    options = dict(host="127.0.0.1", port=0, workers=2)
    assert nodelay_of_an_accepted_connection(TcpConfig("api.app:create_app", factory=True, **options)) != 0
    # uvicorn's own (issue #3149): the reason for TcpConfig; when this fails, uvicorn has mended it
    assert (
        nodelay_of_an_accepted_connection(uvicorn.Config("api.app:create_app", factory=True, **options)) == 0
    )
