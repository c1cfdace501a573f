"""Watching enrichment: progress, the shared 429 pause, and what a stall is.

A backlog that has seen no progress for ENRICHMENT_STALL_ALERT_HOURS is a stall. The alert
about it is one of the minutely alert check's conditions (``tasks.monitoring.alerts``,
key ``enrichment_stalled``): opened, posted once, and posted again when it recovers, with
the other alerts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.orm import Session

from db.queries import queries
from tasks.enrichment.spotify import rate_limiter
from worker.settings import Settings

SQL = queries("tasks.enrichment", "enrichment")


def enrichment_progress(session: Session, user_id: int | None = None) -> dict[str, Any]:
    """Listens by enrichment status, with the share already enriched (not pending)."""
    if user_id is None:
        rows = session.execute(SQL["progress_by_status"]).all()
    else:
        rows = session.execute(SQL["user_progress_by_status"], {"user_id": user_id}).all()
    by_status = {status: 0 for status in ("pending", "matched", "not_found", "failed")}
    by_status.update({row.status: int(row.listens) for row in rows})
    total = sum(by_status.values())
    enriched = total - by_status["pending"]
    report: dict[str, Any] = {
        "user_id": user_id,
        "total": total,
        "enriched": enriched,
        "percentage": round(100.0 * enriched / total, 1) if total else 100.0,
        **by_status,
    }
    if user_id is None:
        report["largest_backlogs"] = [
            {"user_id": r.user_id, "pending": int(r.pending), "connected": bool(r.live)}
            for r in session.execute(SQL["largest_backlogs"], {"limit": 10})
        ]
        connections = session.execute(SQL["connections"]).one()
        report["connections"] = {"live": connections.live, "revoked": connections.revoked}
    return report


def spotify_pause(settings: Settings, client: redis.Redis) -> dict[str, Any] | None:
    """The shared 429 pause, if one is on: what status shows."""
    wait = rate_limiter(settings, client).paused()
    return None if wait is None else {"seconds": round(wait.seconds, 1), "reason": wait.reason}


@dataclass(frozen=True)
class Stall:
    backlog: int
    last_progress: dt.datetime

    def message(self, now: dt.datetime) -> str:
        hours = (now - self.last_progress).total_seconds() / 3600
        return (
            f"Spotify enrichment stalled: {self.backlog} listens waiting and none enriched "
            f"for {hours:.1f} h (last progress {self.last_progress.isoformat()})"
        )


def find_stall(session: Session, now: dt.datetime, after: dt.timedelta) -> Stall | None:
    row = session.execute(SQL["stall"]).one()
    if not row.backlog or row.last_progress is None or now - row.last_progress < after:
        return None
    return Stall(int(row.backlog), row.last_progress)
