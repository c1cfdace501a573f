"""What an operator does, from the CLI, the API or the status page alike: change a
schedule entry, run one now, retry a failed ledger row, workflow execution or ingest job. Each takes
the session and clock; messages are published only after the transaction that records
them has committed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from celery import Celery
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.channels import JOB_STATUS_CHANGES
from db.models import BackgroundTask, ScheduleEntry, WorkflowExecution
from tasks.automation.status import NOT_TRIGGERABLE, public_task_names
from tasks.ingest import control as ingest_control
from worker.arguments import validate_arguments
from worker.errors import PermanentError
from worker.ledger.rescue import wake_dispatcher
from worker.schedules.store import mark_published, record_manual_run, set_entry
from worker.schedules.timing import MissedPolicy, Timing

SessionScope = Callable[[], AbstractContextManager[Session]]
# What ``automation retry KIND`` and the page's retry buttons accept.
RETRY_KINDS = ("ledger", "workflow", "ingest")


class RetryError(PermanentError):
    """The row exists but cannot be retried (not failed, or the same work is queued)."""


class NoSuchRowError(RetryError):
    pass


def change_entry(
    session: Session,
    celery_app: Celery,
    name: str,
    *,
    task: str,
    timing: Timing,
    actor: str,
    now: dt.datetime,
    kwargs: dict[str, Any] | None = None,
    missed: MissedPolicy | None = None,
) -> ScheduleEntry:
    """Add or change entry ``name``; its arguments are checked now, not at 3 AM when the
    slot comes (``InvalidArgumentsError``, ``ScheduleError``)."""
    known = set(public_task_names(celery_app)) - NOT_TRIGGERABLE
    if task in known:
        validate_arguments(task, celery_app.tasks[task].run, (), kwargs or {})
    return set_entry(
        session, name, task, timing, actor, now, kwargs=kwargs, missed=missed, known_tasks=known
    )


def run_entry_now(
    scope: SessionScope, celery_app: Celery, name: str, actor: str, now: dt.datetime
) -> tuple[str, Any]:
    """Run entry ``name``'s task now with its arguments: the task's name and its
    AsyncResult. The fire is on record before it is sent, so the run shows in the entry's
    history; its next slot still fires."""
    task_id = str(uuid.uuid4())
    with scope() as session:
        entry = record_manual_run(session, name, task_id, actor, now)
        task, args, kwargs = entry.task, entry.args, entry.kwargs
    result = celery_app.send_task(
        task,
        args=args,
        kwargs=kwargs,
        task_id=task_id,
        headers={"schedule_entry": name, "schedule_slot": now.isoformat()},
    )
    with scope() as session:
        mark_published(session, [task_id])
    return task, result


def retry_ledger_row(session: Session, row_id: int) -> dict[str, Any]:
    """Put failed ledger row ``row_id`` back to pending with a fresh budget of attempts;
    the dispatcher publishes it once this commits."""
    row = session.get(BackgroundTask, row_id, with_for_update=True)
    if row is None:
        raise NoSuchRowError(f"no ledger row {row_id}")
    if row.status != "failed":
        raise RetryError(f"ledger row {row_id} is {row.status}, not failed: nothing to retry")
    live = session.scalar(
        select(BackgroundTask.id).where(
            BackgroundTask.task_type == row.task_type,
            BackgroundTask.track_id == row.track_id,
            BackgroundTask.status.in_(("pending", "processing")),
        )
    )
    if live is not None:
        raise RetryError(f"{row.task_type} of track {row.track_id} is queued already (row {live})")
    row.status, row.attempts = "pending", 0
    row.enqueued_at = row.started_at = row.completed_at = None
    row.celery_task_id = row.worker_host = None
    wake_dispatcher(session)
    session.flush()
    return {"kind": "ledger", "id": row_id, "task_type": row.task_type, "status": "pending"}


def retry_execution(session: Session, execution_id: int) -> dict[str, Any]:
    """Put failed workflow execution ``execution_id`` back to pending with a fresh budget of
    attempts. Actions that had succeeded are not run again (a webhook that answered 200 is
    not posted twice); the dispatcher publishes it once this commits."""
    row = session.get(WorkflowExecution, execution_id, with_for_update=True)
    if row is None:
        raise NoSuchRowError(f"no workflow execution {execution_id}")
    if row.status != "failed":
        raise RetryError(
            f"workflow execution {execution_id} is {row.status}, not failed: nothing to retry"
        )
    row.status, row.attempts = "pending", 0
    row.run_after = dt.datetime.now(dt.UTC)
    row.enqueued_at = row.started_at = row.finished_at = None
    row.celery_task_id = row.worker_host = None
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOB_STATUS_CHANGES})
    session.flush()
    return {
        "kind": "workflow",
        "id": execution_id,
        "workflow_id": row.workflow_id,
        "status": "pending",
    }


def retry_ingest_job(session: Session, job_id: int) -> dict[str, Any]:
    """Put failed ingest job ``job_id`` back to the queue with a fresh budget of attempts;
    it resumes at the step that failed (the steps it finished are not run again)."""
    try:
        return ingest_control.retry_job(session, job_id)
    except LookupError as exc:
        raise NoSuchRowError(str(exc)) from None
    except ValueError as exc:
        raise RetryError(str(exc)) from None


def retry(session: Session, kind: str, row_id: int) -> dict[str, Any]:
    if kind == "ledger":
        return retry_ledger_row(session, row_id)
    if kind == "workflow":
        return retry_execution(session, row_id)
    if kind == "ingest":
        return retry_ingest_job(session, row_id)
    raise NoSuchRowError(f"unknown kind {kind!r}; valid: {', '.join(RETRY_KINDS)}")
