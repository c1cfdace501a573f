"""Run history (``task_runs``, and the schedule's ``schedule_fires``) past its retention, a
batch per transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from db.queries import delete_in_batches, queries
from worker.settings import Settings

SQL = queries("worker", "run_journal")
SCHEDULES = queries("worker.schedules", "schedules")
BATCH = 5000


def delete_old_task_runs(session: Session, now: dt.datetime, settings: Settings) -> int:
    before = now - dt.timedelta(days=settings.task_run_retention_days)
    # Fires go with the runs they point at: an entry's history is joined from both.
    delete_in_batches(session, SCHEDULES["delete_old_fires"], {"before": before}, batch=BATCH)
    return delete_in_batches(
        session, SQL["delete_task_runs_batch"], {"before": before}, batch=BATCH
    )
