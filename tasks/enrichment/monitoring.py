"""Watching enrichment: progress, the shared 429 pause, and the stall alert.

A backlog that has seen no progress for ENRICHMENT_STALL_ALERT_HOURS is logged at error
level on every check (the hourly enrich_pending) and posted to ALERT_WEBHOOK_URL once per
stall: the stall is named by its last progress, so a new stall alerts again.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from sqlalchemy.orm import Session

from db.queries import queries
from tasks.enrichment.spotify import rate_limiter
from worker.settings import Settings

log = logging.getLogger(__name__)

SQL = queries("tasks.enrichment", "enrichment")
STALL_ALERTED_KEY = "enrichment:stall-alerted"


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


def alert_if_stalled(
    session: Session, now: dt.datetime, settings: Settings, client: redis.Redis
) -> Stall | None:
    """Log a stall at error level; post it to ALERT_WEBHOOK_URL once per stall."""
    stall = find_stall(session, now, dt.timedelta(hours=settings.enrichment_stall_alert_hours))
    if stall is None:
        return None
    message = stall.message(now)
    log.error(message)
    episode = stall.last_progress.isoformat()
    if settings.alert_webhook_url and client.get(STALL_ALERTED_KEY) != episode.encode():
        try:
            httpx.post(
                settings.alert_webhook_url,
                json={
                    "alert": "enrichment_stalled",
                    "text": message,
                    "backlog": stall.backlog,
                    "last_progress": episode,
                },
                timeout=10,
            ).raise_for_status()
        except httpx.HTTPError as exc:
            # The log line above stands; the next hourly run tries the webhook again.
            log.error("stall alert not delivered to ALERT_WEBHOOK_URL: %s", exc)
        else:
            client.set(STALL_ALERTED_KEY, episode, ex=7 * 24 * 3600)
    return stall
