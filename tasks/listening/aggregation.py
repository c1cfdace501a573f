"""Listening-history aggregation, behind ``listening.aggregate`` and ``listening.aggregate_user``.

Incremental by insertion order. A watermark on ``play_history.id`` would lose plays: ids
are drawn when a row is inserted but become visible when its transaction commits, so a
run can see id 101 while id 100 is still uncommitted, move the watermark past both, and
never fold 100. Each play instead carries its inserting transaction's id
(``ingest_xid``), and a run folds the plays with ``watermark <= ingest_xid < xmin``,
where ``xmin`` is its snapshot's oldest unfinished transaction: every transaction below
it has committed or aborted, so each play is folded exactly once, whatever its
``played_at`` (late plays) and whatever order transactions commit in.

All-time figures grow by what a run adds (rollups of user x track and user x artist make
distinct counts incremental). Deleted or edited plays mark their users dirty (a trigger)
and those users are rebuilt from their history. The last-7/30-day figures are recomputed
from the window for users who played in it or whose figures have gone stale, so they stay
right as time passes. Everything runs in PostgreSQL, one transaction per run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import User
from db.queries import execute_counted, queries
from worker.errors import PermanentError

SQL = queries("tasks.listening", "listening")
WEEK = dt.timedelta(days=7)
MONTH = dt.timedelta(days=30)
TOP_N = 10  # top artists, genres and tracks kept per user
WINDOW_CHUNK_USERS = 20_000  # users per window-refresh statement
USER_LOCK_TIMEOUT = "30s"  # aggregate_user waits this long for a running aggregation
# A fold adding more pairs than this share of the rollup (or this many, when it is small)
# refreshes the rollups' statistics at once rather than waiting for autovacuum.
REANALYZE_SHARE, REANALYZE_MIN_PAIRS = 0.1, 50_000


@dataclass(frozen=True)
class AggregationReport:
    status: str  # "done" | "skipped"
    users_folded: int = 0
    users_rebuilt: int = 0
    windows_refreshed: int = 0
    watermark: int | None = None
    reason: str | None = None


def _begin_snapshot(session: Session) -> None:
    # One snapshot for every statement of the run: the fold and the windows agree, and the
    # snapshot's xmin is the exclusive upper bound of what this run folds.
    session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def aggregate_listening(
    session: Session,
    now: dt.datetime,
    *,
    rebuild_user: int | None = None,
    wait: bool = False,
) -> AggregationReport:
    """Fold new plays into the per-user stats and refresh the windowed figures as of ``now``.

    Must start its transaction. Two runs never overlap: the second returns "skipped" at
    once (``wait=False``) or waits up to USER_LOCK_TIMEOUT (``wait=True``). With
    ``rebuild_user`` that user is rebuilt from scratch and only their windows are
    refreshed (the other users' windows wait for the next full run).
    """
    _begin_snapshot(session)
    if rebuild_user is not None and not session.scalar(
        select(User.id).where(User.id == rebuild_user)
    ):
        raise PermanentError(f"no user with id {rebuild_user}")
    if wait:
        session.execute(text(f"SET LOCAL lock_timeout = '{USER_LOCK_TIMEOUT}'"))
        session.execute(SQL["lock"])
    elif not session.scalar(SQL["try_lock"]):
        return AggregationReport("skipped", reason="another listening.aggregate is running")

    until = session.scalar(SQL["snapshot_xmin"])
    since = session.scalar(SQL["read_watermark"]) or 0
    session.execute(SQL["create_rebuild_users"])
    session.execute(SQL["claim_dirty_users"])
    if rebuild_user is not None:
        session.execute(SQL["add_rebuild_user"], {"user_id": rebuild_user})
    rebuilt = session.scalar(text("SELECT count(*) FROM rebuild_users")) or 0
    for statement in (
        "forget_rebuilt_totals",
        "forget_rebuilt_track_plays",
        "forget_rebuilt_artist_plays",
    ):
        session.execute(SQL[statement])

    window = {"since": since, "until": until, "now": now}
    session.execute(SQL["create_fold_groups"])
    session.execute(SQL["stage_fold_groups"], window)
    session.execute(SQL["create_fold_pairs"])
    session.execute(SQL["stage_fold_pairs"])
    session.execute(SQL["analyze_fold_tables"])  # temp tables are never auto-analyzed
    rollup_rows = session.scalar(SQL["rollup_rows"]) or 0
    staged = session.scalar(SQL["staged_pairs"]) or 0
    folded = execute_counted(session, SQL["fold"], window)
    if staged > max(REANALYZE_MIN_PAIRS, REANALYZE_SHARE * rollup_rows):
        session.execute(SQL["analyze_rollups"])
    session.execute(SQL["write_watermark"], window)

    stage = {"now": now, "until": until, "month_start": now - MONTH}
    session.execute(SQL["create_window_plays"])
    if rebuild_user is not None:
        session.execute(SQL["stage_user_window_plays"], {**stage, "user_id": rebuild_user})
        user_ranges = [(rebuild_user, rebuild_user + 1)]
    else:
        session.execute(SQL["stage_window_plays"], stage)
        low, high = session.execute(SQL["user_id_range"]).one()
        user_ranges = (
            []
            if low is None
            else [(lo, lo + WINDOW_CHUNK_USERS) for lo in range(low, high + 1, WINDOW_CHUNK_USERS)]
        )
    session.execute(SQL["index_window_plays"])
    session.execute(SQL["analyze_window_plays"])  # temp tables are never auto-analyzed
    refreshed = sum(_refresh_windows(session, now, lo, hi) for lo, hi in user_ranges)
    return AggregationReport(
        "done",
        users_folded=folded,
        users_rebuilt=rebuilt,
        windows_refreshed=refreshed,
        watermark=until,
    )


def _refresh_windows(session: Session, now: dt.datetime, lo: int, hi: int) -> int:
    return execute_counted(
        session,
        SQL["refresh_windows"],
        {
            "lo": lo,
            "hi": hi,
            "now": now,
            "week_start": now - WEEK,
            "month_start": now - MONTH,
            "top": TOP_N,
        },
    )


def aggregate_user(session: Session, user_id: int, now: dt.datetime) -> AggregationReport:
    """Rebuild one user's stats from their whole history (after an import, say); the
    other users' new plays are folded in on the way, as in any run."""
    return aggregate_listening(session, now, rebuild_user=user_id, wait=True)
