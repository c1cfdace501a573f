"""Housekeeping: ``cleanup.expired_playlists`` (daily at 05:00)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from db.sql import execute_counted, queries
from worker.base_task import AutomationTask
from worker.celery_app import app

SQL = queries("playlists")
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
