"""Expired playlists go, a batch per statement."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from db.queries import execute_counted, queries
from worker.ledger.retention import BATCH

SQL = queries("tasks.playlists", "playlists")


def delete_expired_playlists(session: Session, now: dt.datetime, batch: int = BATCH) -> int:
    """Delete playlists that expired at or before ``now``, a batch per statement."""
    deleted = 0
    while True:
        count = execute_counted(session, SQL["delete_expired"], {"now": now, "batch": batch})
        deleted += count
        if count < batch:
            return deleted
