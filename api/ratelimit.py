"""A rate limit per token: ``settings.rate_limit`` requests in any moving window of that length.

It uses the ``limits`` package's moving window, counted in Redis when the broker is Redis (shared
by every API process) and in memory otherwise (the embedded default: one process).
"""

from __future__ import annotations

import logging
import math
import time
from functools import cached_property

from limits import RateLimitItem, parse, storage, strategies

from store.settings import Settings, masked_url

log = logging.getLogger(__name__)


class RateLimiter:
    """``settings.rate_limit`` requests per token in any moving window of that length."""

    def __init__(self, settings: Settings) -> None:
        self.item: RateLimitItem = parse(settings.rate_limit)
        self.url = settings.rate_limit_store
        self._warned_at = -math.inf

    @cached_property
    def _limiter(self) -> strategies.MovingWindowRateLimiter:
        return strategies.MovingWindowRateLimiter(storage.storage_from_string(self.url))

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
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("rate limit not applied: %s unreachable (%s)", masked_url(self.url), e)
            return None
        return max(1, math.ceil(reset - time.time()))
