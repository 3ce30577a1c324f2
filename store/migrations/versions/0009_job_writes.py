"""job writes: on SQLite, a count of the writes to ``jobs``, kept by triggers

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 16:45:00.000000

A dispatcher pass asks which jobs wait before it ranks them (``store.scheduler``). PostgreSQL
answers a queue that did not change with two numbers (a count and a hash sum); SQLite has no hash
function, so every pass listed every waiting job's ``id.version``: 10 ms of CPU in the embedded
service's one process every 2 s at 10,000 waiting jobs, against 2 ms at 10. With these triggers a
pass that finds the same number of writes finds the same waiting jobs, and lists nothing.

PostgreSQL gets the table but no row and no trigger: every submission would update that one row,
and concurrent submissions would wait for each other's lock on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

EVENTS = ("INSERT", "UPDATE", "DELETE")


def upgrade() -> None:
    op.create_table(
        "job_writes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    if op.get_bind().dialect.name != "sqlite":
        return
    # from a random number, not 0: a process that remembers a count of one database file must
    # not take another file at the same path, made again and written as often, for the same jobs
    op.execute("INSERT INTO job_writes (id, n) VALUES (1, random() >> 2)")
    for event in EVENTS:
        op.execute(
            f"CREATE TRIGGER jobs_written_{event.lower()} AFTER {event} ON jobs "
            "BEGIN UPDATE job_writes SET n = n + 1 WHERE id = 1; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for event in EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS jobs_written_{event.lower()}")
    op.drop_table("job_writes")
