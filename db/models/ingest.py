"""Media ingest (``tasks/ingest/``): the jobs, the pipeline's live controls, and the images
made for tracks.

A job is created by whoever has an object in the bucket: another service inserting a row
(nothing else needed: a trigger wakes the workers), ``automation ingest``, the API, or the
watcher of the local bucket's ``incoming/``. Its status moves ``queued`` -> ``processing``
-> ``done`` | ``failed``; being paused is the pipeline's state (``ingest_pipeline``), not a
job's, so pausing and resuming never rewrites jobs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

INGEST_STATUSES = ("queued", "processing", "done", "failed")
INGEST_KINDS = ("audio", "image")
# In the order they run; each finished step's output is kept in ``outputs`` under its name,
# which is how a retry knows to start at the step that failed.
INGEST_STEPS = ("probe", "analysis", "images", "publish")
IMAGE_KINDS = ("waveform", "cover", "thumbnail", "card")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class IngestJob(Base):
    __tablename__ = "ingest_jobs"

    id: Mapped[BigId]
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # The object's key in the ingest bucket (INGEST_URL), e.g. uploads/2026/11/25/<id>/a.flac.
    object_path: Mapped[str] = mapped_column(Text)
    # An uploaded cover for an audio job (a key in the same bucket); embedded art otherwise.
    cover_path: Mapped[str | None] = mapped_column(Text)
    # As the creator guessed it, or NULL; the probe sets what the file's content says.
    kind: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'queued'"))
    # The step running or last run; ``outputs`` holds each finished one's result.
    step: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("5"))
    error: Mapped[str | None] = mapped_column(Text)
    # For an audio job, the track it became; for an image job, the track it is a cover of.
    track_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("tracks.id", ondelete="SET NULL"), index=True
    )
    # cli, api, watcher; NULL for a row inserted by another service.
    submitted_via: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    started_at: Mapped[dt.datetime | None]  # the first attempt's start
    finished_at: Mapped[dt.datetime | None]
    # The message that carries the job (fences every write of the run holding it).
    run_after: Mapped[dt.datetime] = mapped_column(server_default=text("now()"))
    enqueued_at: Mapped[dt.datetime | None]
    celery_task_id: Mapped[str | None] = mapped_column(Text)
    worker_host: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[dt.datetime | None]  # this attempt's start

    __table_args__ = (
        CheckConstraint(_in("status", INGEST_STATUSES), name="status"),
        CheckConstraint(f"kind IS NULL OR {_in('kind', INGEST_KINDS)}", name="kind"),
        CheckConstraint(f"step IS NULL OR {_in('step', INGEST_STEPS)}", name="step"),
        CheckConstraint("object_path <> ''", name="object_path"),
        # Queued jobs without a message: what the dispatcher publishes, oldest first.
        Index(
            "ix_ingest_jobs_unpublished",
            "id",
            postgresql_where=text("status = 'queued' AND enqueued_at IS NULL"),
        ),
        # The active jobs (concurrency, stuck alert, status) are few next to the finished.
        Index(
            "ix_ingest_jobs_active",
            "status",
            "created_at",
            postgresql_where=text("status IN ('queued', 'processing')"),
        ),
        # Failed jobs, few beside the done ones: counted by /metrics, listed for a retry.
        Index("ix_ingest_jobs_failed", "id", postgresql_where=text("status = 'failed'")),
        # Per-hour statistics: jobs finished in a window.
        Index("ix_ingest_jobs_finished_at", "finished_at"),
        # The rate limit: jobs published in the last minute.
        Index("ix_ingest_jobs_enqueued_at", "enqueued_at"),
    )


class IngestPipeline(Base):
    """The one row of live controls, changed by ``automation ingest`` and read by every
    claim and dispatch: no restart for a pause, a batch size or a step's concurrency.
    A NULL value, or no row at all, means the setting's default (INGEST_*) and running."""

    __tablename__ = "ingest_pipeline"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    paused_at: Mapped[dt.datetime | None]
    paused_by: Mapped[str | None] = mapped_column(Text)
    batch_size: Mapped[int | None]
    rate_per_minute: Mapped[int | None]
    # step -> most jobs running that step at once, e.g. {"analysis": 2}.
    step_concurrency: Mapped[dict[str, int]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    updated_at: Mapped[CreatedAt]

    __table_args__ = (
        CheckConstraint("id = 1", name="one_row"),
        CheckConstraint("batch_size IS NULL OR batch_size > 0", name="batch_size"),
        CheckConstraint("rate_per_minute IS NULL OR rate_per_minute > 0", name="rate"),
    )


class TrackImage(Base):
    """An image made for a track, one per kind and size (0 for the unsized ones): the
    key a backfill looks for when a size is added to INGEST_THUMBNAIL_SIZES."""

    __tablename__ = "track_images"

    track_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)  # a key in the ingest bucket
    width: Mapped[int]
    height: Mapped[int]
    job_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ingest_jobs.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[CreatedAt]

    __table_args__ = (CheckConstraint(_in("kind", IMAGE_KINDS), name="kind"),)
