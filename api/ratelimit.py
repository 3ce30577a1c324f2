"""A rate limit per token: ``settings.rate_limit`` requests in any moving window of that length.

It uses the ``limits`` package's moving window, counted in Redis when the broker is Redis (shared
by every API process) and in memory otherwise (the embedded default: one process).

Two doors to the same counts: ``retry_after`` for a request served on a worker thread, and
``retry_after_async`` for the hot reads served on the event loop (``api.hot``), with ``limits``'
asyncio storage (redis-py's asyncio client, one per event loop: ``api.loops``). Both count in the
same keys, so a token's requests are one window whichever door they take (counted in memory, the
second door is the first: no I/O to wait for).
"""

from __future__ import annotations

import logging
import math
import time
from functools import cached_property

from anyio import to_thread
from limits import RateLimitItem, parse, storage, strategies
from limits.aio import storage as storage_aio
from limits.aio import strategies as aio_strategies

from api.loops import PerLoop
from store.settings import Settings, masked_url

log = logging.getLogger(__name__)


class RateLimiter:
    """``settings.rate_limit`` requests per token in any moving window of that length."""

    def __init__(self, settings: Settings) -> None:
        self.item: RateLimitItem = parse(settings.rate_limit)
        self.url = settings.rate_limit_store
        self._warned_at = -math.inf
        self._async = PerLoop(self._async_limiter, _close_limiter)

    @cached_property
    def _limiter(self) -> strategies.MovingWindowRateLimiter:
        return strategies.MovingWindowRateLimiter(storage.storage_from_string(self.url))

    def _async_limiter(self) -> aio_strategies.MovingWindowRateLimiter:
        # redis-py's asyncio client (the broker's library, not another one); a Redis that does not
        # answer costs a request two seconds at most (then it goes through: fails open)
        made = storage.storage_from_string(
            f"async+{self.url}", implementation="redispy", socket_connect_timeout=2, socket_timeout=2
        )
        assert isinstance(made, storage_aio.Storage)
        return aio_strategies.MovingWindowRateLimiter(made)

    async def aclose(self) -> None:
        """Close this event loop's connections to the counter's store (at the lifespan's end)."""
        await self._async.aclose()

    def retry_after(self, key: str) -> int | None:
        """Counts one request for ``key``; None if allowed, else the seconds to wait.

        Fails open: if the counter's store (Redis) cannot be reached, the request goes through
        and a warning is logged (at most once a minute): an outage of the rate limiter must not
        take the API down with it.
        """
        try:
            if self._limiter.hit(self.item, "token", key):
                return None
            reset = self._limiter.get_window_stats(self.item, "token", key).reset_time
        except Exception as e:
            self._failed_open(e)
            return None
        return _seconds_until(reset)

    async def retry_after_async(self, key: str) -> int | None:
        """``retry_after`` on the event loop (no thread, no blocking round trip). Counted in
        memory, it is ``retry_after`` itself: no I/O, and one window for both doors."""
        if self.url.startswith("memory"):
            return self.retry_after(key)
        if not self.url.startswith(("redis://", "rediss://")):  # a store with no asyncio client here
            return await to_thread.run_sync(self.retry_after, key)
        try:
            limiter = self._async.get()
            if await limiter.hit(self.item, "token", key):
                return None
            reset = (await limiter.get_window_stats(self.item, "token", key)).reset_time
        except Exception as e:
            self._failed_open(e)
            return None
        return _seconds_until(reset)

    def _failed_open(self, e: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at > 60:
            self._warned_at = now
            log.warning("rate limit not applied: %s unreachable (%s)", masked_url(self.url), e)


def _seconds_until(reset: float) -> int:
    """The ``Retry-After`` of a window that resets at ``reset`` (epoch seconds): at least 1."""
    return max(1, math.ceil(reset - time.time()))


async def _close_limiter(limiter: aio_strategies.MovingWindowRateLimiter) -> None:
    bridge = getattr(limiter.storage, "bridge", None)  # a Redis storage's client
    client = bridge.get_connection() if bridge is not None else None
    if client is not None and hasattr(client, "aclose"):
        await client.aclose()
