"""Run journal: task_runs rows keyed by execution, commit markers, dead letters stored once.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("task_runs", sa.Column("run_key", sa.Text(), nullable=True))
    # Rows written before the journal are their own executions.
    op.execute("UPDATE task_runs SET run_key = 'before-journal:' || id")
    op.alter_column(
        "task_runs",
        "run_key",
        nullable=False,
        server_default=sa.text("(gen_random_uuid())::text"),
    )
    op.create_unique_constraint(op.f("uq_task_runs_run_key"), "task_runs", ["run_key"])
    op.add_column(
        "task_runs",
        sa.Column("retries", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("task_runs", sa.Column("forwarded_from", sa.Text(), nullable=True))
    op.add_column("task_runs", sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "task_run_commits",
        sa.Column("run_key", sa.Text(), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_key", name=op.f("pk_task_run_commits")),
    )
    op.create_index(op.f("ix_task_run_commits_committed_at"), "task_run_commits", ["committed_at"])
    op.add_column("dead_letters", sa.Column("journal_id", sa.Text(), nullable=True))
    op.create_unique_constraint(op.f("uq_dead_letters_journal_id"), "dead_letters", ["journal_id"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_dead_letters_journal_id"), "dead_letters", type_="unique")
    op.drop_column("dead_letters", "journal_id")
    op.drop_table("task_run_commits")
    op.drop_column("task_runs", "committed_at")
    op.drop_column("task_runs", "forwarded_from")
    op.drop_column("task_runs", "retries")
    op.drop_constraint(op.f("uq_task_runs_run_key"), "task_runs", type_="unique")
    op.drop_column("task_runs", "run_key")
