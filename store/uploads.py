"""Reads of uploaded teachers and datasets (``store.models.Upload``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Upload


def uploads_of(session: Session, kind: str, *, team: str | None = None) -> list[Upload]:
    """Uploads of one kind (``model`` or ``dataset``), newest first; with ``team``, its own only."""
    stmt = select(Upload).where(Upload.kind == kind).order_by(Upload.created_at.desc())
    if team is not None:
        stmt = stmt.where(Upload.team == team)
    return list(session.scalars(stmt))
