"""Event workflows (``tasks.workflows``): the rules, the changes they watch, what they did."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

EXECUTION_STATUSES = ("pending", "processing", "completed", "failed", "skipped")


class Workflow(Base):
    """A rule: when a job of ``source`` changes status and ``conditions`` hold, run
    ``actions`` in order. ``definition`` is the workflow file as validated and normalised
    (``tasks.workflows.definition``); the other columns are what SQL filters on."""

    __tablename__ = "automation_workflows"

    id: Mapped[BigId]
    # None: a platform-wide rule, which sees every user's jobs; otherwise only its owner's.
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    # The new statuses the conditions can hold for (None: any). The status trigger records
    # a change only if some active workflow wants it, so busy tables cost little.
    on_statuses: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    definition: Mapped[dict[str, Any]] = mapped_column(JSONB)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    # HMAC key for webhook signatures, encrypted at rest (``worker.secrets``).
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]

    __table_args__ = (
        Index("ix_automation_workflows_source_active", "source", "active"),
        # The status trigger's lookup: does some active workflow want this (source,
        # status)? (db/triggers/job_status_changes_v2.sql.)
        Index(
            "ix_automation_workflows_watch",
            text("workflow_watch_keys(source, on_statuses)"),
            postgresql_using="gin",
            postgresql_where=text("active"),
        ),
    )


class JobStatusChange(Base):
    """The outbox: a job's status changed. Written by a trigger in the changing
    transaction; ``matched_at`` is set once the dispatcher made its executions."""

    __tablename__ = "job_status_changes"

    id: Mapped[BigId]
    source: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    old_status: Mapped[str | None] = mapped_column(Text)  # None: the job was inserted
    new_status: Mapped[str] = mapped_column(Text)
    job: Mapped[dict[str, Any]] = mapped_column(JSONB)  # the row as the change left it
    # Set when a workflow's action caused the change: {"chain": [workflow ids, oldest first]}.
    origin: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    changed_at: Mapped[CreatedAt]
    matched_at: Mapped[dt.datetime | None]

    __table_args__ = (
        # The dispatcher's scan: only changes still to match.
        Index("ix_job_status_changes_unmatched", "id", postgresql_where=text("matched_at IS NULL")),
        Index("ix_job_status_changes_changed_at", "changed_at"),
    )


class WorkflowExecution(Base):
    """One workflow meeting one change: run, or skipped with the reason."""

    __tablename__ = "automation_execution_logs"

    id: Mapped[BigId]
    workflow_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("automation_workflows.id", ondelete="CASCADE")
    )
    change_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    old_status: Mapped[str | None] = mapped_column(Text)
    new_status: Mapped[str] = mapped_column(Text)
    # The change as the actions see it: source, job_id, old_status, new_status, job, ...
    trigger_data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    skip_reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text)
    # Workflows this execution descends from, itself last (the loop guard's evidence).
    chain: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    debounce_key: Mapped[str | None] = mapped_column(Text)
    concurrency_key: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer)
    # One entry per action, in order: {"type", "ok", "status", "detail", "at"}.
    action_results: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    error: Mapped[str | None] = mapped_column(Text)  # the last one
    created_at: Mapped[CreatedAt]
    run_after: Mapped[CreatedAt]  # not claimed before (a retry's backoff, a debounce)
    enqueued_at: Mapped[dt.datetime | None]  # when its current message was published
    celery_task_id: Mapped[str | None] = mapped_column(Text)
    worker_host: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'skipped')",
            name="status",
        ),
        # A change replayed, a message redelivered, two dispatchers: one row per pair.
        UniqueConstraint("workflow_id", "change_id"),
        # Exactly once per key: a skipped row repeats the key it was a duplicate of.
        Index(
            "uq_automation_execution_logs_key",
            "workflow_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("status <> 'skipped'"),
        ),
        # Logs of a workflow, newest first; its per-minute rate.
        Index("ix_automation_execution_logs_workflow_created", "workflow_id", "created_at"),
        # The per job and status limit: the last execution of (workflow, job, status).
        Index(
            "ix_automation_execution_logs_job_status",
            "workflow_id",
            "job_id",
            "new_status",
            postgresql_where=text("status <> 'skipped'"),
        ),
        # Dispatch, rescue, status: only rows still to do.
        Index(
            "ix_automation_execution_logs_active",
            "status",
            "run_after",
            postgresql_where=text("status IN ('pending', 'processing')"),
        ),
        Index("ix_automation_execution_logs_created_at", "created_at"),
    )


class Notification(Base):
    """A message for a user, written by a workflow's ``notification`` action."""

    __tablename__ = "notifications"

    id: Mapped[BigId]
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    workflow_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("automation_workflows.id", ondelete="SET NULL")
    )
    execution_id: Mapped[int | None] = mapped_column(BigInteger)
    action_index: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[CreatedAt]
    read_at: Mapped[dt.datetime | None]

    # An execution retried after writing its notification writes it once.
    __table_args__ = (UniqueConstraint("execution_id", "action_index"),)
