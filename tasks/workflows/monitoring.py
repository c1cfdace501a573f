"""How the workflows are doing, for the status report (``automation status``, the
``automation.status`` task, the status page and the metrics read the same section).

The shape is a contract those readers rely on: every key is always there, counts are
zero and times are ``None`` when there is nothing to count.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from db.models.workflows import EXECUTION_STATUSES
from db.queries import queries
from tasks.monitoring import readings

SQL = queries("tasks.workflows", "workflows")


def summary(session: Session, now: dt.datetime) -> dict[str, Any]:
    """Executions of the last day by status, since when the longest-waiting due one has
    waited (``oldest_pending``), the changes the dispatcher has not matched yet (both read
    as /metrics and the alerts read them), and how many workflows are active."""
    by_status: dict[str, int] = dict(
        session.execute(SQL["status_summary"], {"since": now - dt.timedelta(days=1)}).all()
    )
    health = readings.workflow_health(session, now)
    oldest_pending = health.oldest_due_at
    workflows = session.execute(SQL["workflow_counts"]).one()
    return {
        "executions_24h": {status: by_status.get(status, 0) for status in EXECUTION_STATUSES},
        "oldest_pending": _iso(oldest_pending),
        # Never negative: the database's clock may run a little ahead of ours.
        "oldest_pending_age_seconds": None
        if oldest_pending is None
        else round(max(0.0, (now - oldest_pending).total_seconds()), 1),
        "unmatched_changes": health.unmatched,
        "oldest_unmatched": _iso(health.oldest_unmatched_at),
        "workflows": {"active": workflows.active, "inactive": workflows.inactive},
    }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
