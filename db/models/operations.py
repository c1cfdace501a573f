"""The system's own records: the background-task ledger, run history, dead letters."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

BACKGROUND_TASK_STATUSES = ("pending", "processing", "completed", "failed")


class BackgroundTask(Base):
    __tablename__ = "background_tasks"

    id: Mapped[BigId]
    task_type: Mapped[str] = mapped_column(Text)
    track_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("tracks.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    started_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed')", name="status"
        ),
        # Status summaries, rescue of old pending/processing rows, retention cleanup.
        Index("ix_background_tasks_status_created_at", "status", "created_at"),
    )


# started: running, or its worker died (then "lost" once the message comes back);
# refused: redelivered past MAX_DELIVERIES; forwarded: arrived on the inbox, sent home.
TASK_RUN_STATUSES = (
    "started",
    "success",
    "failure",
    "retry",
    "ignored",
    "forwarded",
    "lost",
    "refused",
    "revoked",
)


class TaskRun(Base):
    """One execution of one task, recorded from Celery signals (cf. pg_cron's job_run_details)."""

    __tablename__ = "task_runs"

    id: Mapped[BigId]
    task_id: Mapped[str] = mapped_column(Text)
    task_name: Mapped[str] = mapped_column(Text)
    args_summary: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    delivery: Mapped[int] = mapped_column(server_default=text("1"))
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    runtime_seconds: Mapped[float | None]
    worker_host: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    result_summary: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_task_runs_task_id", "task_id"),
        # "Last run of X" for the status view; newest first.
        Index("ix_task_runs_task_name_started_at", "task_name", text("started_at DESC")),
        Index("ix_task_runs_started_at", "started_at"),
    )


class DeadLetter(Base):
    """A message the worker could not run (undecodable, unknown task, invalid), kept whole."""

    __tablename__ = "dead_letters"

    id: Mapped[BigId]
    received_at: Mapped[CreatedAt]
    reason: Mapped[str] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(Text)
    task_name: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    body: Mapped[str | None] = mapped_column(Text)
    worker_host: Mapped[str | None] = mapped_column(Text)
