"""The ledger's retention: finished rows past their keep-time, a batch per transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from db.queries import delete_in_batches, queries
from worker.settings import Settings

SQL = queries("worker.ledger", "ledger")
BATCH = 5000


def delete_old_background_tasks(
    session: Session, now: dt.datetime, settings: Settings
) -> dict[str, int]:
    """Completed rows past their retention, failed rows past theirs; how many of each."""
    return {
        status: delete_in_batches(
            session,
            SQL["delete_finished_batch"],
            {"status": status, "before": now - dt.timedelta(days=days)},
            batch=BATCH,
        )
        for status, days in (
            ("completed", settings.background_task_retention_days),
            ("failed", settings.failed_task_retention_days),
        )
    }
