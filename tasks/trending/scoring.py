"""Trending tracks, behind ``trending.calculate`` (every 6 hours and on demand).

The score (trending.sql beside this module has it exactly): over the last 7 days, each play weighs
0.5 ^ (age / 24 h), and each listener counts for at most three plays of a track.

Why this shape. Hacker News (``(P - 1) / (T + 2) ^ 1.8``) and Reddit's hot
(``log10(votes) + age / 45000``) decay by the age of the *item*: right for submissions,
wrong for songs, where an old track that is being played again should trend. Decaying
each *play* exponentially (a time-decayed count) makes recent plays dominate
(momentum) and needs no history beyond the window. Repeats are the cheapest way to game
a chart: charts cap the streams one listener adds to a track per day, and ListenBrainz
counts distinct listeners. We cap per listener over the window instead of per day: it
bounds one listener at three (decayed) plays, tighter than a daily cap summed over a
week, so more listeners always beat more repeats; and it needs one aggregation level
fewer (bench/analytics.py: a per-day cap measured about 2x the bare-SQL floor, this
about 1.2-1.6x).

The previous result is replaced in one transaction (delete, then insert): readers see
the old table until the new one commits, never a half-written or empty one.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.queries import execute_counted, queries

SQL = queries("tasks.trending", "trending")
WINDOW = dt.timedelta(days=7)
DAY = dt.timedelta(days=1)
HALF_LIFE = dt.timedelta(hours=24)
PLAYS_COUNTED_PER_LISTENER = 3


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
    session.execute(SQL["work_mem"])
    session.execute(SQL["clear"])
    written = execute_counted(
        session,
        SQL["calculate"],
        {
            "now": now,
            "day_start": now - DAY,
            "week_start": now - WINDOW,
            "decay_per_second": math.log(0.5) / HALF_LIFE.total_seconds(),
            "cap": PLAYS_COUNTED_PER_LISTENER,
            "top_n": top_n,
        },
    )
    return TrendingReport("done", tracks=written, calculated_at=now.isoformat())
