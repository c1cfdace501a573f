"""Worker liveness: broker resets on record, and running runs found by worker.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broker_resets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("epoch", sa.Text(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detected_by", sa.Text(), nullable=True),
        sa.Column(
            "recovered_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("ledger_republished", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broker_resets")),
        sa.UniqueConstraint("epoch", name=op.f("uq_broker_resets_epoch")),
    )
    op.create_index(
        "ix_task_runs_running_worker_host",
        "task_runs",
        ["worker_host"],
        postgresql_where=sa.text("status = 'started'"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_runs_running_worker_host", table_name="task_runs")
    op.drop_table("broker_resets")
