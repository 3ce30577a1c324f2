"""Opaque pagination cursors. Clients pass them back unchanged and never parse them."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from api.problems import invalid


def encode_job_cursor(created_at: datetime, job_id: str) -> str:
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    raw = json.dumps([created_at.isoformat(), job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_job_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) of the last job of the previous page; a 422 if it was tampered with."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if not isinstance(job_id, str) or when.tzinfo is None:
            raise ValueError("bad cursor")
        return when, job_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid("cursor", "not a cursor this API returned") from None


def decode_row_cursor(cursor: str | None, field: str = "after") -> int:
    """Metric and event cursors: the last row id seen (0 for the beginning)."""
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit() or len(cursor) > 19:
        raise invalid(field, "not a cursor this API returned")
    return int(cursor)
