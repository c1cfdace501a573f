"""Durable background tasks: the ledger's columns, dedup, and analysis queued on insert.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.triggers import sql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The trigger files' ON CONFLICT clauses repeat this predicate: it is how they name the index.
ACTIVE = "status IN ('pending', 'processing')"


def upgrade() -> None:
    op.add_column("background_tasks", sa.Column("celery_task_id", sa.Text()))
    op.add_column("background_tasks", sa.Column("enqueued_at", sa.DateTime(timezone=True)))
    op.add_column("background_tasks", sa.Column("worker_host", sa.Text()))
    op.add_column("background_tasks", sa.Column("result", postgresql.JSONB()))
    op.create_check_constraint("priority", "background_tasks", "priority BETWEEN 0 AND 9")
    op.create_index(
        "uq_background_tasks_active",
        "background_tasks",
        ["task_type", "track_id"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
    )
    # The dispatcher's and the rescuer's scans: small, since only active rows are in it.
    op.create_index(
        "ix_background_tasks_active_enqueued_at",
        "background_tasks",
        ["status", "enqueued_at"],
        postgresql_where=sa.text(ACTIVE),
    )
    op.add_column("tracks", sa.Column("audio_features", postgresql.JSONB()))
    op.add_column("tracks", sa.Column("genre_source", sa.Text()))
    op.add_column("tracks", sa.Column("genre_confidence", sa.Float()))
    op.execute(sql("tracks_queue_analysis"))
    op.execute(sql("tracks_queue_audio_reanalysis"))
    op.execute(sql("background_tasks_notify"))


def downgrade() -> None:
    op.execute("DROP TRIGGER background_tasks_notify ON background_tasks")
    op.execute("DROP FUNCTION notify_background_dispatch()")
    op.execute("DROP TRIGGER tracks_queue_audio_reanalysis ON tracks")
    op.execute("DROP FUNCTION queue_audio_reanalysis()")
    op.execute("DROP TRIGGER tracks_queue_analysis ON tracks")
    op.execute("DROP FUNCTION queue_track_analysis()")
    op.drop_column("tracks", "genre_confidence")
    op.drop_column("tracks", "genre_source")
    op.drop_column("tracks", "audio_features")
    op.drop_index("ix_background_tasks_active_enqueued_at", table_name="background_tasks")
    op.drop_index("uq_background_tasks_active", table_name="background_tasks")
    op.drop_constraint("priority", "background_tasks", type_="check")
    op.drop_column("background_tasks", "result")
    op.drop_column("background_tasks", "worker_host")
    op.drop_column("background_tasks", "enqueued_at")
    op.drop_column("background_tasks", "celery_task_id")
