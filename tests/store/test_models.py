"""The models match the migrations, and a job's status reads back as the enum."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from store.db import get_engine, session_scope
from store.models import LIVE, TERMINAL, Base, Job, JobStatus


def test_the_migrations_make_the_models_tables(db_url: str) -> None:
    with get_engine(db_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_a_status_is_stored_as_its_string_and_read_back_as_the_enum(db_url: str) -> None:
    with session_scope(db_url) as session:
        job = Job(name="j", spec={}, status="running")
        session.add(job)
        session.flush()
        job_id = job.id
    with session_scope(db_url) as session:
        stored = session.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
        loaded = session.get(Job, job_id)
        assert loaded is not None
    assert stored == "running" and loaded.status is JobStatus.RUNNING
    with pytest.raises(StatementError), session_scope(db_url) as session:
        session.add(Job(name="j", spec={}, status="sleeping"))


def test_every_status_is_live_or_terminal() -> None:
    assert sorted(LIVE + TERMINAL) == sorted(JobStatus) and not set(LIVE) & set(TERMINAL)
