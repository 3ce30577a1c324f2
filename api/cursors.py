"""Opaque pagination cursors. Clients pass them back unchanged and never parse them.

A cursor comes back from the client, so it is checked like any input: a tampered one is a 422,
never a value the database cannot compare (a NUL, an id past 64 bits, an offset PostgreSQL
refuses).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime

from core.errors import InvalidRequestError

INT64_MAX = (1 << 63) - 1
_ROW_ID = re.compile(r"[0-9]{1,19}")  # ASCII digits: str.isdigit() also takes '²' and '٣'
_JOB_ID = re.compile(r"[0-9a-f]{1,64}")


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
        if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id) or when.tzinfo is None:
            raise ValueError("bad cursor")
        # in UTC: PostgreSQL refuses offsets past 15:59, which fromisoformat accepts
        return when.astimezone(UTC), job_id
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequestError.field("cursor", "not a cursor this API returned") from None


def decode_row_cursor(cursor: str | None, field: str = "after") -> int:
    """Metric, event and audit cursors: the last row id seen (0 for the beginning)."""
    if cursor is None or cursor == "":
        return 0
    if not _ROW_ID.fullmatch(cursor) or int(cursor) > INT64_MAX:
        raise InvalidRequestError.field(field, "not a cursor this API returned")
    return int(cursor)
