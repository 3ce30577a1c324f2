"""Caps on open event streams: per token, and in total for one API process.

A stream is cheap while it waits, but each one polls the database twice a second for as long
as its job runs, so one client opening streams in a loop could crowd out everybody else's
requests. Past a cap, opening another stream is a ``429`` with ``Retry-After``; a closed stream
(the job ended, the client went away) frees its slot at once.
"""

from __future__ import annotations

import threading
from collections import Counter

from core.errors import TooManyRequestsError

RETRY_AFTER_S = 5


class Slot:
    """One open stream's place; ``release`` is idempotent, and a slot dropped unreleased (a
    response that never started) releases itself."""

    def __init__(self, slots: StreamSlots, token_id: str) -> None:
        self._slots: StreamSlots | None = slots
        self.token_id = token_id

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._give_back(self.token_id)

    def __del__(self) -> None:
        self.release()


class StreamSlots:
    def __init__(self, per_token: int, total: int) -> None:
        self.per_token, self.total = per_token, total
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, token_id: str) -> Slot:
        with self._lock:
            if self._open[token_id] >= self.per_token:
                raise _busy(f"this token has {self.per_token} event streams open already (the most)")
            if self._open.total() >= self.total:
                raise _busy(f"this server has {self.total} event streams open already (the most)")
            self._open[token_id] += 1
        return Slot(self, token_id)

    def open(self, token_id: str | None = None) -> int:
        with self._lock:
            return self._open.total() if token_id is None else self._open[token_id]

    def _give_back(self, token_id: str) -> None:
        with self._lock:
            self._open[token_id] -= 1
            if self._open[token_id] <= 0:
                del self._open[token_id]


def _busy(detail: str) -> TooManyRequestsError:
    return TooManyRequestsError(
        "too-many-streams",
        f"{detail}; close one, poll GET /v1/jobs/{{id}} instead, or retry in {RETRY_AFTER_S} s",
        retry_after_s=RETRY_AFTER_S,
    )
