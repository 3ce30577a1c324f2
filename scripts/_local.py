"""What the scripts that start a local API share."""

from __future__ import annotations

import socket


def free_port(preferred: int) -> int:
    """``preferred`` if nothing listens on it, else a port the system picks."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
