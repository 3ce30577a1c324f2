"""jobs: an index on (team, created_at, id), the jobs list's order within a team

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:30:00.000000

The list (``store.jobs.job_keys``) asks for a team's jobs newest first, ``LIMIT`` a page. With
only the single-column indexes, both databases read every job of the team and sorted them: 10,000
waiting jobs made the list's first page, and its ``304``, a tenth as fast as at 10 (bench/api_poll.py).
With this index they read the page's rows and stop.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_team_created_id", "jobs", ["team", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_team_created_id", table_name="jobs")
