"""Media ingest: the jobs, the pipeline's live controls (one row), the images made for
tracks; the trigger that wakes the ingest dispatcher and the workflows' status trigger on
the jobs (db/triggers/ingest_jobs_notify.sql); new tracks inserted already analysed
queue no analyses (db/triggers/tracks_queue_analysis_v2.sql).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.triggers import sql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_pipeline",
        sa.Column("id", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_by", sa.Text(), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("rate_per_minute", sa.Integer(), nullable=True),
        sa.Column(
            "step_concurrency",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "batch_size IS NULL OR batch_size > 0", name=op.f("ck_ingest_pipeline_batch_size")
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_ingest_pipeline_one_row")),
        sa.CheckConstraint(
            "rate_per_minute IS NULL OR rate_per_minute > 0", name=op.f("ck_ingest_pipeline_rate")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_pipeline")),
    )
    op.create_table(
        "ingest_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("object_path", sa.Text(), nullable=False),
        sa.Column("cover_path", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column(
            "outputs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("5"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("track_id", sa.BigInteger(), nullable=True),
        sa.Column("submitted_via", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "run_after", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("celery_task_id", sa.Text(), nullable=True),
        sa.Column("worker_host", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IS NULL OR kind IN ('audio', 'image')", name=op.f("ck_ingest_jobs_kind")
        ),
        sa.CheckConstraint("object_path <> ''", name=op.f("ck_ingest_jobs_object_path")),
        sa.CheckConstraint(
            "status IN ('queued', 'processing', 'done', 'failed')",
            name=op.f("ck_ingest_jobs_status"),
        ),
        sa.CheckConstraint(
            "step IS NULL OR step IN ('probe', 'analysis', 'images', 'publish')",
            name=op.f("ck_ingest_jobs_step"),
        ),
        sa.ForeignKeyConstraint(
            ["track_id"],
            ["tracks.id"],
            name=op.f("fk_ingest_jobs_track_id_tracks"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_ingest_jobs_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_jobs")),
    )
    op.create_index(
        "ix_ingest_jobs_active",
        "ingest_jobs",
        ["status", "created_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'processing')"),
    )
    op.create_index("ix_ingest_jobs_finished_at", "ingest_jobs", ["finished_at"], unique=False)
    op.create_index("ix_ingest_jobs_enqueued_at", "ingest_jobs", ["enqueued_at"], unique=False)
    op.create_index(op.f("ix_ingest_jobs_track_id"), "ingest_jobs", ["track_id"], unique=False)
    op.create_index(
        "ix_ingest_jobs_unpublished",
        "ingest_jobs",
        ["id"],
        unique=False,
        postgresql_where=sa.text("status = 'queued' AND enqueued_at IS NULL"),
    )
    op.create_index(op.f("ix_ingest_jobs_user_id"), "ingest_jobs", ["user_id"], unique=False)
    op.create_table(
        "track_images",
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('waveform', 'cover', 'thumbnail', 'card')", name=op.f("ck_track_images_kind")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["ingest_jobs.id"],
            name=op.f("fk_track_images_job_id_ingest_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["track_id"],
            ["tracks.id"],
            name=op.f("fk_track_images_track_id_tracks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("track_id", "kind", "size", name=op.f("pk_track_images")),
    )
    op.create_index(op.f("ix_track_images_job_id"), "track_images", ["job_id"], unique=False)
    op.execute(sql("ingest_jobs_notify"))
    op.execute(sql("tracks_queue_analysis_v2"))


def downgrade() -> None:
    # The first version's function, as 0004 created it (its trigger is untouched here).
    first = sql("tracks_queue_analysis")
    function = first[first.index("CREATE FUNCTION") : first.index("CREATE TRIGGER")]
    op.execute(function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.drop_table("track_images")
    op.drop_table("ingest_jobs")  # its triggers go with it
    op.drop_table("ingest_pipeline")
    op.execute("DROP FUNCTION notify_ingest_dispatch()")
