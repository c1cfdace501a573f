"""Execution logs and matched changes past ``WORKFLOW_LOG_RETENTION_DAYS``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from db.queries import queries
from worker.settings import Settings

SQL = queries("tasks.workflows", "workflows")
BATCH = 10_000


def prune(session: Session, now: dt.datetime, settings: Settings) -> dict[str, int]:
    """Delete finished executions and matched changes older than the keep-time, in batches
    (each its own transaction, so a large backlog never holds one long lock)."""
    before = now - dt.timedelta(days=settings.workflow_log_retention_days)
    deleted = {"executions": 0, "changes": 0}
    while True:
        row = session.execute(SQL["prune"], {"before": before, "batch": BATCH}).one()
        session.commit()
        deleted["executions"] += row.executions
        deleted["changes"] += row.changes
        if row.executions < BATCH and row.changes < BATCH:
            return deleted
