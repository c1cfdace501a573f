"""Trending tracks: ``trending.calculate``, every 6 hours and on demand.

The score (db/sql/trending.sql has the exact formula): each play weighs
0.5 ^ (age / 24 h), and each listener counts for at most three plays of a track a day.

Why this shape. Hacker News (``(P - 1) / (T + 2) ^ 1.8``) and Reddit's hot
(``log10(votes) + age / 45000``) decay by the age of the *item*: right for submissions,
wrong for songs, where an old track that is being played again should trend. Decaying
each *play* exponentially is the time-decayed count behind "hot" rankings elsewhere:
recent plays dominate (momentum) and the score needs no history beyond the window.
Charts cap the streams one listener can add to a track per day, and ListenBrainz counts
distinct listeners, because repeats are the cheapest way to game a chart; the daily cap
per listener does both, so a hundred listeners beat one listener's hundred replays.

The previous result is replaced in one transaction (delete, then insert): readers see
the old table until the new one commits, never a half-written or empty one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.sql import execute_counted, queries
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.settings import get_settings

SQL = queries("trending")
WINDOW = dt.timedelta(days=7)
HALF_LIFE = dt.timedelta(hours=24)
DAILY_CAP_PER_LISTENER = 3


@dataclass(frozen=True)
class TrendingReport:
    status: str  # "done" | "skipped"
    tracks: int = 0
    calculated_at: str | None = None
    reason: str | None = None


def calculate_trending(session: Session, now: dt.datetime, top_n: int) -> TrendingReport:
    """Replace trending_tracks with the top ``top_n`` tracks as of ``now``."""
    if not session.scalar(SQL["try_lock"]):
        return TrendingReport("skipped", reason="another trending.calculate is running")
    session.execute(SQL["clear"])
    written = execute_counted(
        session,
        SQL["calculate"],
        {
            "now": now,
            "week_start": now - WINDOW,
            "half_life": HALF_LIFE.total_seconds(),
            "cap": DAILY_CAP_PER_LISTENER,
            "top_n": top_n,
        },
    )
    return TrendingReport("done", tracks=written, calculated_at=now.isoformat())


@app.task(name="trending.calculate", bind=True)
def calculate(self: AutomationTask) -> dict[str, Any]:
    report = calculate_trending(
        self.session, dt.datetime.now(dt.UTC), get_settings().trending_top_n
    )
    return asdict(report)
