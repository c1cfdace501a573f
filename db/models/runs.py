"""Run history and dead letters: what every message that reached a worker became."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

# started: running, or its worker died (then "lost" once the message comes back or the
# worker's parent reports the death); refused: redelivered past MAX_DELIVERIES; cut_off:
# stopped because the broker connection was lost, its message to be delivered again;
# duplicate: a ledger message whose row was already claimed or finished elsewhere;
# forwarded: kept for rows written before the inbox forwarded messages without a run.
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
    "cut_off",
    "duplicate",
)


class TaskRun(Base):
    """One execution of one task (cf. pg_cron's job_run_details), from the run journal.

    ``run_key`` names the execution: the journal's start and finish entries and the
    task's own transaction (``committed_at``) all write the same row, in any order.
    """

    __tablename__ = "task_runs"

    id: Mapped[BigId]
    run_key: Mapped[str] = mapped_column(
        Text, unique=True, server_default=text("(gen_random_uuid())::text")
    )
    task_id: Mapped[str] = mapped_column(Text)
    task_name: Mapped[str] = mapped_column(Text)
    args_summary: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    # The message's retry number (a retry is a new message with the same task id) and,
    # within it, which delivery this is: 2 or more means earlier ones died with a worker.
    retries: Mapped[int] = mapped_column(server_default=text("0"))
    delivery: Mapped[int] = mapped_column(server_default=text("1"))
    # The queue a by-name message first arrived on before it was sent to its home queue.
    forwarded_from: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]
    runtime_seconds: Mapped[float | None]
    worker_host: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    result_summary: Mapped[str | None] = mapped_column(Text)
    # When the task's own transaction committed (from task_run_commits): its work is done,
    # whatever happened after.
    committed_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_task_runs_task_id", "task_id"),
        # "Last run of X" for the status view; newest first.
        Index("ix_task_runs_task_name_started_at", "task_name", text("started_at DESC")),
        Index("ix_task_runs_started_at", "started_at"),
        # Runs still going, by worker: the rescue asks which of their workers are dead.
        Index(
            "ix_task_runs_running_worker_host",
            "worker_host",
            postgresql_where=text("status = 'started'"),
        ),
    )


class TaskRunCommit(Base):
    """A run's work committed: written inside the task's own transaction.

    A table of its own, insert-only, so the marker never touches a row that the journal's
    drainer wrote after the task's snapshot was taken (a REPEATABLE READ task would fail
    to serialize). The drainer copies it onto ``task_runs.committed_at``.
    """

    __tablename__ = "task_run_commits"

    run_key: Mapped[str] = mapped_column(Text, primary_key=True)
    committed_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_task_run_commits_committed_at", "committed_at"),)


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
    # The run journal's entry id: a dead letter drained twice is stored once.
    journal_id: Mapped[str | None] = mapped_column(Text, unique=True)


class BrokerReset(Base):
    """Redis had no epoch marker: it was new, or it lost its data (``worker.liveness``).

    What the recovery did about it is kept with it, for the operator who asks what a Redis
    without persistence cost.
    """

    __tablename__ = "broker_resets"

    id: Mapped[BigId]
    epoch: Mapped[str] = mapped_column(Text, unique=True)
    detected_at: Mapped[dt.datetime]
    detected_by: Mapped[str | None] = mapped_column(Text)
    recovered_at: Mapped[CreatedAt]
    # Ledger rows whose messages were published again.
    ledger_republished: Mapped[int]
