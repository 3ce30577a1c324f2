"""What a team may add: its queue limit and its storage quota, checked under the team's lock.

``admit_job`` and ``admit_upload`` take the team's row lock (``store.locks.hold_team``) before
counting, so two submissions racing for a team's last queue place cannot both get it: the second
waits for the first to commit, then counts its job. Storage is accounted as the bytes of the
team's artifacts (its live jobs') plus its uploads. Functions take a session and never commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.errors import QuotaExceededError
from store.locks import hold_team
from store.models import HELD, WAITING, Artifact, Job, Team, Upload
from store.scheduler import IS_DISPATCHED, slots_needed


@dataclass(frozen=True)
class Usage:
    queued: int  # waiting for a GPU, dispatched or not
    running: int  # starting, running or cancelling
    storage_bytes: int
    slots: int = 0  # GPU slots held by its started and dispatched jobs: what max_running limits


def usage(session: Session, team: str) -> Usage:
    rows = session.execute(
        select(Job.status, func.count())
        .where(Job.team == team, Job.status.in_((*WAITING, *HELD)))
        .group_by(Job.status)
    ).all()
    counts = {status: int(n) for status, n in rows}
    gpus = session.scalars(
        select(Job.gpus).where(
            Job.team == team, or_(Job.status.in_(HELD), IS_DISPATCHED), Job.deleted_at.is_(None)
        )
    )
    return Usage(
        queued=sum(counts.get(s, 0) for s in WAITING),
        running=sum(counts.get(s, 0) for s in HELD),
        storage_bytes=storage_used(session, team),
        slots=sum(slots_needed(n) for n in gpus),
    )


def storage_used(session: Session, team: str) -> int:
    """Bytes a team keeps: the artifacts of its jobs plus its uploads."""
    artifacts = session.scalar(
        select(func.coalesce(func.sum(Artifact.size), 0))
        .join(Job, Job.id == Artifact.job_id)
        .where(Job.team == team)
    )
    uploads = session.scalar(select(func.coalesce(func.sum(Upload.size), 0)).where(Upload.team == team))
    return int(artifacts or 0) + int(uploads or 0)


def _team(session: Session, name: str) -> Team | None:
    if not hold_team(session, name):
        return None  # a caller's team always exists; be lenient for rows made before teams
    return session.get(Team, name, populate_existing=True)


def _check_storage(session: Session, team: Team, adding: int) -> None:
    if team.max_storage_bytes is None:
        return
    used = storage_used(session, team.name)
    if used + adding > team.max_storage_bytes or (adding == 0 and used >= team.max_storage_bytes):
        raise QuotaExceededError(
            QuotaExceededError.STORAGE,
            f"team {team.name} keeps {used} bytes of artifacts and uploads; its quota is "
            f"{team.max_storage_bytes} bytes (delete finished jobs or uploads to make room)",
        )


def admit_job(session: Session, team_name: str, limited: bool | None = None) -> None:
    """Raises ``QuotaExceededError`` when the team's queue is full or its storage quota is used up.

    A team with neither limit takes no lock and counts nothing: its submissions are stored side by
    side. (A limit an admin sets while a submission is on its way applies from the next one.)
    ``limited``: whether the team had a limit when the request's token was read
    (``Caller.team_limited``); False sends no query, None reads it here.
    """
    if limited is False:
        return
    limits = session.execute(
        select(Team.max_queued, Team.max_storage_bytes).where(Team.name == team_name)
    ).one_or_none()
    if limits is None or (limits.max_queued is None and limits.max_storage_bytes is None):
        return
    team = _team(session, team_name)
    if team is None:
        return
    if team.max_queued is not None:
        waiting = session.scalar(
            select(func.count()).select_from(Job).where(Job.team == team.name, Job.status.in_(WAITING))
        )
        if int(waiting or 0) >= team.max_queued:
            raise QuotaExceededError(
                QuotaExceededError.QUEUE_FULL,
                f"team {team.name} already has {waiting} job(s) waiting, its limit (max_queued); "
                "submit again when some have started",
            )
    _check_storage(session, team, 0)


def admit_upload(session: Session, team_name: str, size: int) -> None:
    """Raises ``QuotaExceededError`` when ``size`` more bytes would go past the storage quota."""
    team = _team(session, team_name)
    if team is not None:
        _check_storage(session, team, size)
