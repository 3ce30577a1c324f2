"""Named locks held until the end of a transaction, the same way on SQLite and PostgreSQL.

Taking a lock is an ``UPDATE`` of its row: PostgreSQL locks that row until the transaction ends,
and SQLite takes its database-wide write lock. Either way a second session taking the same lock
waits (SQLite: up to the busy timeout) until the first commits or rolls back, so a check-then-act
inside the lock (count a team's jobs, then add one) cannot race. Take a lock first in a
transaction, before reading what it protects.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import Lock, Team, as_utc, utcnow

DISPATCH = "dispatch"  # one scheduler pass at a time hands jobs to the pool


def hold(session: Session, name: str) -> None:
    """Take the lock ``name`` (made on first use) until the session's transaction ends."""
    if _touch(session, name):
        return
    try:
        with session.begin_nested():
            session.add(Lock(name=name, at=utcnow()))
    except IntegrityError:
        pass  # another session made it first: take it as usual
    _touch(session, name)


def passed_since(session: Session, name: str, moment: datetime) -> bool:
    """Whether the lock ``name`` was last taken after ``moment`` (its holder then saw everything
    committed before ``moment``)."""
    taken = last_taken(session, name)
    return taken is not None and taken > moment


def last_taken(session: Session, name: str) -> datetime | None:
    """When the lock ``name`` was last taken, by any process (None: never); by the clock of the
    process that took it."""
    taken = session.scalar(select(Lock.at).where(Lock.name == name))
    return None if taken is None else as_utc(taken)


def hold_team(session: Session, team: str) -> bool:
    """Take the lock of a team's row (its admission of new jobs); False if there is no such team."""
    stmt = update(Team).where(Team.name == team).values(max_queued=Team.max_queued)  # a no-op write
    return bool(session.execute(stmt.execution_options(synchronize_session=False)).rowcount)  # type: ignore[attr-defined]


def _touch(session: Session, name: str) -> bool:
    stmt = (
        update(Lock).where(Lock.name == name).values(at=utcnow()).execution_options(synchronize_session=False)
    )
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
