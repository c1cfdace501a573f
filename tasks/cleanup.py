"""Housekeeping, on beat's schedule (beat_schedule.py).

- ``cleanup.expired_playlists`` (daily): playlists past their expiry;
- ``cleanup.stuck_tasks`` (every 10 minutes): ledger rows whose worker died or whose message
  was lost go back to ``pending`` for the dispatcher to publish, or fail once out of attempts;
- ``cleanup.background_tasks`` (weekly): completed ledger rows past their retention, failed
  ones past theirs (longer, for inspection);
- ``cleanup.task_runs`` (daily): run history past its retention.

Deletions go a batch per transaction, so no statement holds many row locks for long and
the table stays writable throughout.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.sql import execute_counted, queries
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.ledger import limit_params
from worker.settings import Settings, get_settings

SQL = queries("playlists")
LEDGER = queries("background")
BATCH = 5000


def delete_expired_playlists(session: Session, now: dt.datetime, batch: int = BATCH) -> int:
    """Delete playlists that expired at or before ``now``, a batch per statement."""
    deleted = 0
    while True:
        count = execute_counted(session, SQL["delete_expired"], {"now": now, "batch": batch})
        deleted += count
        if count < batch:
            return deleted


@app.task(name="cleanup.expired_playlists", bind=True)
def expired_playlists(self: AutomationTask) -> dict[str, int]:
    return {"deleted": delete_expired_playlists(self.session, dt.datetime.now(dt.UTC))}


def rescue_stuck_tasks(
    session: Session, celery_app: Celery, now: dt.datetime, settings: Settings
) -> dict[str, int]:
    """Settle the ledger's orphans; returns how many rows each rule moved.

    A ``processing`` row older than its task's hard time limit has lost its worker (the
    limit kills any run that reaches it): back to ``pending`` with the attempt counted, or
    ``failed`` with the reason once ``BACKGROUND_MAX_ATTEMPTS`` runs have died. A
    ``pending`` row whose message went out more than ``BACKGROUND_LOST_AFTER_SECONDS`` ago
    lost it. Both get ``enqueued_at = NULL``; the NOTIFY sent at commit wakes the
    dispatcher (worker/dispatcher.py), which publishes fresh messages.
    """
    params = {"now": now, "max_attempts": settings.background_max_attempts}
    params |= limit_params(celery_app)
    failed = len(session.execute(LEDGER["fail_exhausted_orphans"], params).all())
    requeued = len(session.execute(LEDGER["requeue_orphans"], params).all())
    lost_before = now - dt.timedelta(seconds=settings.background_lost_after_seconds)
    republished = len(
        session.execute(LEDGER["requeue_lost_messages"], {"lost_before": lost_before}).all()
    )
    if requeued or republished:
        session.execute(text("SELECT pg_notify('background_tasks', '')"))
    return {"failed": failed, "requeued": requeued, "republished": republished}


def _delete_in_batches(session: Session, statement: Any, params: dict[str, Any]) -> int:
    # Commits after each batch: a long retention backlog never becomes one long transaction.
    deleted = 0
    while True:
        count = execute_counted(session, statement, {**params, "batch": BATCH})
        session.commit()
        deleted += count
        if count < BATCH:
            return deleted


def delete_old_background_tasks(
    session: Session, now: dt.datetime, settings: Settings
) -> dict[str, int]:
    """Completed rows past their retention, failed rows past theirs; how many of each."""
    return {
        status: _delete_in_batches(
            session,
            LEDGER["delete_finished_batch"],
            {"status": status, "before": now - dt.timedelta(days=days)},
        )
        for status, days in (
            ("completed", settings.background_task_retention_days),
            ("failed", settings.failed_task_retention_days),
        )
    }


def delete_old_task_runs(session: Session, now: dt.datetime, settings: Settings) -> int:
    before = now - dt.timedelta(days=settings.task_run_retention_days)
    return _delete_in_batches(session, LEDGER["delete_task_runs_batch"], {"before": before})


@app.task(name="cleanup.stuck_tasks", bind=True)
def stuck_tasks(self: AutomationTask) -> dict[str, int]:
    return rescue_stuck_tasks(self.session, self.app, dt.datetime.now(dt.UTC), get_settings())


@app.task(name="cleanup.background_tasks", bind=True)
def background_tasks(self: AutomationTask) -> dict[str, int]:
    return delete_old_background_tasks(self.session, dt.datetime.now(dt.UTC), get_settings())


@app.task(name="cleanup.task_runs", bind=True)
def task_runs(self: AutomationTask) -> dict[str, int]:
    return {"deleted": delete_old_task_runs(self.session, dt.datetime.now(dt.UTC), get_settings())}
