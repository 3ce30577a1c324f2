"""teachers and baselines trained once: kept stages and the jobs that use them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stage_artifacts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("team", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team", "key", name="uq_stage_artifacts_team_key"),
    )
    op.create_table(
        "stage_uses",
        sa.Column("stage_id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["stage_id"], ["stage_artifacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stage_id", "job_id"),
    )
    op.create_index("ix_stage_uses_job_id", "stage_uses", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_stage_uses_job_id", table_name="stage_uses")
    op.drop_table("stage_uses")
    op.drop_table("stage_artifacts")
