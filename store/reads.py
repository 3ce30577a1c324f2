"""The first round trip of a hot read (``api.hot``): who the token stands for, the serial of the
stored queue places (``store.places``) and, for a read of one job, that job's head, in one query.

A poll of a job used to send three: the token, the job's key, the places' serial. Each statement
costs the API more CPU (SQLAlchemy, the driver) than the database spends on it, so the three go
as one ``SELECT`` of the token's row joined to its user, with the job (outer join on its primary
key) and the serial (a primary-key subquery) beside it. A ``304`` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, or_, select
from sqlalchemy.orm import Session

from store.identity import Authenticated, Caller, hash_token
from store.jobs import JobHead
from store.models import ApiToken, Job, JobStatus, QueuePlaces, Team, User, as_utc
from store.places import ROW


@dataclass(frozen=True)
class Opening:
    token: Authenticated | None  # None: no such token, or revoked
    serial: int | None  # the stored places' serial; None: no pass has stored any yet
    head: JobHead | None  # the job asked for, if it exists (visibility is the caller's to judge)


_SERIAL = select(QueuePlaces.serial).where(QueuePlaces.id == ROW).scalar_subquery().label("serial")
_LIMITED = (  # what a submission's ``admit_job`` would read first: a team without limits is not
    # counted, so with this it sends no query at all (one round trip less per submission)
    select(Team.name)
    .where(Team.name == User.team, or_(Team.max_queued.is_not(None), Team.max_storage_bytes.is_not(None)))
    .exists()
    .label("team_limited")
)
TOKEN = (
    select(ApiToken.id, ApiToken.last_used_at, User.name, User.team, User.role, _SERIAL, _LIMITED)
    .join(User, User.name == ApiToken.user)
    .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None))
)
TOKEN_AND_JOB = TOKEN.add_columns(
    Job.id.label("job_id"), Job.status, Job.version, Job.team.label("job_team"), Job.deleted_at
).outerjoin(Job, Job.id == bindparam("job_id"))
# built once: a statement made per request costs more CPU to build and key for the compiled
# cache than the database spends answering it. ``store.loop_reads`` sends the same statements
# through psycopg's asyncio side; ``opening`` reads either's row by position.


def open_read(session: Session, secret: str, job_id: str | None = None) -> Opening:
    params = {"token_hash": hash_token(secret)}
    # on the session's connection: a Core statement, none of the ORM's per-execution set-up for
    # a query that loads no entity (7% of a poll's CPU)
    connection = session.connection()
    if job_id is None:
        row = connection.execute(TOKEN, params).first()
    else:
        row = connection.execute(TOKEN_AND_JOB, {**params, "job_id": job_id}).first()
    return opening(None if row is None else tuple(row), job_id)


def opening(row: Sequence[Any] | None, job_id: str | None) -> Opening:
    """The ``Opening`` of a row of ``TOKEN`` (or ``TOKEN_AND_JOB``, for ``job_id``), by position."""
    if row is None:
        # an unknown token: the places and the job are read when (if) the caller is known
        return Opening(None, None, None)
    token_id, last_used_at, user, team, role, serial_now, limited = row[:7]
    found = Authenticated(
        Caller(user=user, team=team, role=role, token_id=token_id, team_limited=bool(limited)),
        None if last_used_at is None else as_utc(last_used_at),
    )
    head = None
    if job_id is not None and row[7] is not None:
        found_id, status, version, job_team, deleted_at = row[7:12]
        head = JobHead(found_id, JobStatus(status), version, job_team, deleted_at is not None)
    return Opening(found, serial_now, head)
