"""Sweeps as rows, and where their Optuna studies live. Functions never commit.

Optuna keeps its studies in the project's own database, with its own tables and its own Alembic
version table, which must not meet this project's (both are named ``alembic_version``): on
PostgreSQL they live in the schema ``optuna`` (made by migration 0006), reached through the
connection's ``search_path``; on SQLite, in a file beside the database (``<name>.optuna.db``),
which also keeps Optuna's writes clear of the project's database-wide write lock that a sweep's
pass holds (``store.locks``). Torch-free; ``optuna`` is imported on first use.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from store.models import TERMINAL, Job, Metric, Sweep, SweepStatus, utcnow

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

OPTUNA_SCHEMA = "optuna"


def optuna_url(db_url: str) -> tuple[str, dict[str, Any]]:
    """The URL and engine arguments of Optuna's storage for the project's database ``db_url``."""
    if db_url.startswith("sqlite"):
        path = db_url.split("///", 1)[-1]
        if not path or path == ":memory:":
            raise ValueError("sweeps need a database on disk")
        target = Path(path)
        return f"sqlite:///{target.with_name(target.stem + '.optuna.db')}", {"connect_args": {"timeout": 30}}
    return db_url, {"connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"}, "pool_pre_ping": True}


@lru_cache(maxsize=8)
def study_storage(db_url: str) -> RDBStorage:
    """Optuna's storage for ``db_url``, one per process (it holds a connection pool)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, engine_kwargs = optuna_url(db_url)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def bump(session: Session, sweep_id: str, **values: Any) -> None:
    """Change a sweep's row (``values``) and its version, its ETag."""
    stmt = (
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(version=Sweep.version + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)


def running_sweeps(session: Session) -> list[str]:
    """The ids of the sweeps a driver pass advances."""
    stmt = select(Sweep.id).where(Sweep.status == SweepStatus.RUNNING).order_by(Sweep.created_at)
    return list(session.scalars(stmt))


def trials_of(session: Session, sweep_id: str) -> list[Job]:
    """The sweep's trial jobs by trial number (the spec unloaded only where a caller skips it)."""
    stmt = select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial)
    return list(session.scalars(stmt))


def live_trials(session: Session, sweep_id: str) -> list[str]:
    stmt = select(Job.id).where(Job.sweep_id == sweep_id, Job.status.not_in(TERMINAL))
    return list(session.scalars(stmt))


def stage_metric(session: Session, job_id: str, stage: str, name: str) -> dict[int, float]:
    """One metric of one stage of a job, by epoch."""
    stmt = select(Metric.epoch, Metric.value).where(
        Metric.job_id == job_id, Metric.stage == stage, Metric.name == name
    )
    return {int(epoch): float(value) for epoch, value in session.execute(stmt)}


def sweep_keys(
    session: Session,
    teams: Collection[str] | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[Sweep]:
    """A page of sweeps, newest first; ``teams`` None: every team's."""
    stmt = select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit)
    if teams is not None:
        stmt = stmt.where(Sweep.team.in_(teams))
    if after is not None:
        created, last_id = after
        stmt = stmt.where(
            or_(Sweep.created_at < created, (Sweep.created_at == created) & (Sweep.id < last_id))
        )
    return session.scalars(stmt).all()


def trial_counts(session: Session, sweep_ids: Collection[str]) -> dict[str, dict[str, int]]:
    """``{sweep id: {job status: count}}`` of their trials."""
    if not sweep_ids:
        return {}
    stmt = (
        select(Job.sweep_id, Job.status, func.count())
        .where(Job.sweep_id.in_(sweep_ids))
        .group_by(Job.sweep_id, Job.status)
    )
    out: dict[str, dict[str, int]] = {}
    for sweep_id, status, n in session.execute(stmt):
        out.setdefault(str(sweep_id), {})[str(status)] = int(n)
    return out
