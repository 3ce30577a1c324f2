"""sweeps: a search over a spec's parameters whose trials are jobs; Optuna's own schema

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 12:00:00.000000

Optuna (``store.sweeps.study_storage``) keeps its tables, and its own Alembic version table, in
a schema of their own on PostgreSQL (``optuna``), made here; on SQLite in a file beside the
database. Either way they never meet this project's tables and migrations.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPTUNA_SCHEMA = "optuna"


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("team", sa.String(length=100), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("study", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("best_job_id", sa.String(length=32), nullable=True),
        sa.Column("best_value", sa.Float(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sweeps_team", "sweeps", ["team"], unique=False)
    op.create_index("ix_sweeps_status", "sweeps", ["status"], unique=False)
    op.create_index("ix_sweeps_created_at", "sweeps", ["created_at"], unique=False)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("trial", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_jobs_sweep_id_sweeps", "sweeps", ["sweep_id"], ["id"])
        batch.create_index("ix_jobs_sweep_id", ["sweep_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP SCHEMA IF EXISTS {OPTUNA_SCHEMA} CASCADE")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_sweep_id")
        batch.drop_constraint("fk_jobs_sweep_id_sweeps", type_="foreignkey")
        batch.drop_column("trial")
        batch.drop_column("sweep_id")
    op.drop_index("ix_sweeps_created_at", table_name="sweeps")
    op.drop_index("ix_sweeps_status", table_name="sweeps")
    op.drop_index("ix_sweeps_team", table_name="sweeps")
    op.drop_table("sweeps")
