"""The GPU pool as a caller sees it: every worker host and queue, which device indices each job
holds, and of another team's job only how far along it is (``store.pool`` redacts; the rule of
who sees what is the caller's)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from store.identity import Caller
from store.pool import pool_view


def view(session: Session, caller: Caller) -> dict[str, Any]:
    """Worker hosts, their slots and devices, the jobs on each with their device indices, the
    queue per team and per GPU type. Everyone sees the whole pool; a job of a team the caller
    does not see shows its team, status, devices and progress only."""
    return pool_view(session, visible=caller.sees)
