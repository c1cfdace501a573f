"""Durable background tasks: the ledger's columns, dedup, and analysis queued on insert.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('pending', 'processing')"

# Any service may insert tracks, by plain SQL too: the database itself queues their
# analysis, in the inserting transaction, so nothing depends on the inserter knowing us.
# A track without an audio file gets no audio analyses (there is nothing to read); a track
# without a genre gets a genre classification. Duplicates of active rows collapse.
QUEUE_ON_INSERT = f"""
    CREATE FUNCTION queue_track_analysis() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO background_tasks (task_type, track_id)
        SELECT wanted.task_type, t.id
        FROM new_tracks t
        CROSS JOIN LATERAL (VALUES
            ('mood_detection', t.audio_path IS NOT NULL),
            ('energy_analysis', t.audio_path IS NOT NULL),
            ('genre_classification', t.genre IS NULL)
        ) AS wanted (task_type, needed)
        WHERE wanted.needed
        ON CONFLICT (task_type, track_id) WHERE {ACTIVE} DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE TRIGGER tracks_queue_analysis AFTER INSERT ON tracks
        REFERENCING NEW TABLE AS new_tracks
        FOR EACH STATEMENT EXECUTE FUNCTION queue_track_analysis();
"""

# A new or replaced audio file is analysed again (transition tables cannot be combined with
# a column list, so this one is per row; audio changes are rare).
QUEUE_ON_AUDIO_CHANGE = f"""
    CREATE FUNCTION queue_audio_reanalysis() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO background_tasks (task_type, track_id)
        VALUES ('mood_detection', NEW.id), ('energy_analysis', NEW.id)
        ON CONFLICT (task_type, track_id) WHERE {ACTIVE} DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE TRIGGER tracks_queue_audio_reanalysis AFTER UPDATE OF audio_path ON tracks
        FOR EACH ROW
        WHEN (NEW.audio_path IS NOT NULL AND NEW.audio_path IS DISTINCT FROM OLD.audio_path)
        EXECUTE FUNCTION queue_audio_reanalysis();
"""

# Rows inserted without a message (enqueued_at NULL: by the triggers above, or by another
# service writing the ledger directly) wake the workers' dispatcher at commit.
NOTIFY_DISPATCHER = """
    CREATE FUNCTION notify_background_dispatch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM new_rows WHERE enqueued_at IS NULL) THEN
            PERFORM pg_notify('background_tasks', '');
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER background_tasks_notify AFTER INSERT ON background_tasks
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION notify_background_dispatch();
"""


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
    op.execute(QUEUE_ON_INSERT)
    op.execute(QUEUE_ON_AUDIO_CHANGE)
    op.execute(NOTIFY_DISPATCHER)


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
