"""One async client per event loop.

An async client's connections belong to the event loop that opened them: a connection pool made
on one loop and used on another fails (or, worse, hangs). ``uvicorn`` runs one loop per process
for its whole life, but tests run one loop per ``TestClient``, some of them at once in threads, all
serving the same application; so the API keeps its async clients (``AppState.loop_reads``,
``RateLimiter``) by loop, makes each on the loop that first asks for it, and closes it when that
loop's application shuts down (its lifespan's end).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """``make()`` once per running loop; ``close(made)`` awaited by ``aclose()`` on that loop."""

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # loops in several threads (tests) share one application

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        try:
            return self._made[loop]
        except KeyError:
            with self._lock:
                if loop not in self._made:
                    self._made[loop] = self._make()
                return self._made[loop]

    async def aclose(self) -> None:
        """Close what this loop made, if anything (the next ``get`` on it makes a new one)."""
        with self._lock:
            if (loop := asyncio.get_running_loop()) not in self._made:
                return
            made = self._made.pop(loop)
        await self._close(made)
