"""hosts with several slots; jobs ask for GPUs and record where they were placed

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slots", sa.Integer(), nullable=False, server_default="1"))

    # rows from before count as one GPU each, as the scheduler counted them then
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpus", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("placed_on", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("devices", sa.JSON(), nullable=True))

    # Jobs handed to the old per-GPU-type queues (gpu.<type>) and not yet claimed: no worker
    # consumes those queues any more, so they go back to waiting and the dispatcher places them.
    op.execute("UPDATE jobs SET published_at = NULL WHERE status = 'queued' AND published_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("devices")
        batch_op.drop_column("placed_on")
        batch_op.drop_column("gpus")

    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("slots")
