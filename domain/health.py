"""Readiness: whether the service's dependencies answer."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import text

from core.errors import FieldIssue, UnavailableError
from store.db import get_engine

NOT_READY_RETRY_AFTER_S = 5


class NotReadyError(UnavailableError):
    """A dependency does not answer; ``errors`` names each failing one and what it said."""

    def __init__(self, failing: Mapping[str, str]) -> None:
        super().__init__(
            "not-ready",
            f"not ready: {', '.join(failing)} unavailable",
            retry_after_s=NOT_READY_RETRY_AFTER_S,
        )
        self.errors = tuple(FieldIssue(name, result) for name, result in failing.items())


def check_database(url: str) -> None:
    """Returns once the database answers a query; raises otherwise."""
    with get_engine(url).connect() as connection:
        connection.execute(text("SELECT 1"))
