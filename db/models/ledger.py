"""The ledger's table: one row per background task (``worker.ledger``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

BACKGROUND_TASK_STATUSES = ("pending", "processing", "completed", "failed")
ACTIVE_STATUSES = ("pending", "processing")


class BackgroundTask(Base):
    """The ledger: the record of truth for per-track work (``worker.ledger``).

    Redis only carries a message naming the row; a message acts only if it can claim its
    row, so lost, doubled or redelivered messages never lose or double the work.
    """

    __tablename__ = "background_tasks"

    id: Mapped[BigId]
    task_type: Mapped[str] = mapped_column(Text)
    track_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("tracks.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    # 0 (normal) to 9 (most urgent): the order workers take a backlog in.
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))  # claims so far
    error_message: Mapped[str | None] = mapped_column(Text)  # the last one
    created_at: Mapped[CreatedAt]
    # When its current message was published; NULL: not yet (the dispatcher's work).
    enqueued_at: Mapped[dt.datetime | None]
    # The id of the message that may work on the row; a redelivery of it may resume.
    celery_task_id: Mapped[str | None] = mapped_column(Text)
    worker_host: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed')", name="status"
        ),
        CheckConstraint("priority BETWEEN 0 AND 9", name="priority"),
        # Status summaries, rescue of old pending/processing rows, retention cleanup.
        Index("ix_background_tasks_status_created_at", "status", "created_at"),
        # One active row per (type, track): duplicate requests collapse into it.
        Index(
            "uq_background_tasks_active",
            "task_type",
            "track_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'processing')"),
        ),
        # /metrics counts rows to do and failed ones by status and type: index-only.
        Index(
            "ix_background_tasks_unfinished_status_type",
            "status",
            "task_type",
            postgresql_where=text("status IN ('pending', 'processing', 'failed')"),
        ),
        # The dispatcher's and the rescuer's scans touch only active rows.
        Index(
            "ix_background_tasks_active_enqueued_at",
            "status",
            "enqueued_at",
            postgresql_where=text("status IN ('pending', 'processing')"),
        ),
    )
