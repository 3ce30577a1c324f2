"""Readiness: a database that answers, and the problem a failing dependency becomes."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from core.errors import FieldIssue
from domain.health import NotReadyError, check_database


def test_check_database(tmp_path: Path) -> None:
    check_database(f"sqlite:///{tmp_path / 'ok.db'}")
    pytest.importorskip("psycopg")
    with pytest.raises(OperationalError):  # nothing listens on port 1
        check_database("postgresql+psycopg://nobody@127.0.0.1:1/nothing?connect_timeout=2")


def test_not_ready_names_each_failing_dependency() -> None:
    error = NotReadyError(
        {"database": "unavailable: OperationalError", "broker": "unavailable: TimeoutError"}
    )
    assert (error.status, error.type, error.headers) == (503, "not-ready", {"Retry-After": "5"})
    assert error.message == "not ready: database, broker unavailable"
    assert error.errors == (
        FieldIssue("database", "unavailable: OperationalError"),
        FieldIssue("broker", "unavailable: TimeoutError"),
    )
