"""Listening analytics at scale: trending against its floor, incremental aggregation
against history size, and the first full aggregation through a real worker.

    python -m bench.analytics                       # 1M and 10M plays (about 10 minutes)
    python -m bench.analytics --scales 200000,2000000   # a quicker look

Each scale gets its own fresh database on BENCH_DATABASE_URL's server (default: the local
PostgreSQL) and is seeded with `automation seed`'s generator: 100k users, 200k tracks,
plays at a constant daily rate (--daily-plays), so a larger scale means a longer history
with the same activity per day. That is what "cost follows new plays, not history" asks
about. Figures are ratios measured in this one run, never absolute targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from worker.stack import celery_argv

NOW = dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)

FLOOR_SQL = text("""
    SELECT track_id,
           count(*) FILTER (WHERE played_at > :day_start) AS play_count_24h,
           count(*) AS play_count_7d,
           count(DISTINCT user_id) FILTER (WHERE played_at > :day_start) AS listeners_24h,
           count(DISTINCT user_id) AS listeners_7d
    FROM play_history
    WHERE played_at > :week_start AND played_at <= :now
    GROUP BY track_id
""")

# One more day of plays: the last day replayed a day later (same users, same tastes).
NEXT_DAY_SQL = text("""
    INSERT INTO play_history (user_id, track_id, played_at, ms_played)
    SELECT user_id, track_id, played_at + interval '1 day', ms_played
    FROM play_history WHERE played_at > :day_start AND played_at <= :now
""")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def statement_timings(engine: Any) -> Iterator[list[str]]:
    """Collect '<ms> <first words>' for each statement run on ``engine``, slowest first."""
    spent: list[tuple[float, str]] = []

    def before(conn: Any, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        words = " ".join(line for line in statement.splitlines() if not line.startswith("--"))
        took = time.perf_counter() - conn.info["bench_started"]
        spent.append((took, " ".join(words.split())[:60]))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    report: list[str] = []
    try:
        yield report
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
        report.extend(f"{took * 1000:.0f} ms {what}" for took, what in sorted(spent, reverse=True))


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


@contextmanager
def fresh_database(server_url: str, keep: bool) -> Iterator[str]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def peak_rss_kib(pid: int) -> int | None:
    """A process's peak resident memory (VmHWM) in KiB; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))


def worker_peak_memory_running(url: str, redis_url: str, task: str) -> tuple[float, int, Any]:
    """Run ``task`` by name on a real worker process; return (seconds, peak RSS KiB, result).

    A solo-pool worker runs the task in its main process, whose VmHWM is then the peak
    resident memory of the whole worker, imports and all. Flat across scales means the
    work stayed in PostgreSQL.
    """
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as data_dir:
        env["DATA_DIR"] = data_dir
        worker = subprocess.Popen(
            celery_argv(
                "worker",
                "--pool",
                "solo",
                "--queues",
                "analytics",
                "--hostname",
                f"bench-{uuid.uuid4().hex[:6]}@%h",
                "--loglevel",
                "WARNING",
            ),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            from worker.celery_app import create_app
            from worker.settings import Settings

            client = create_app(Settings(database_url=url, redis_url=redis_url))
            deadline = time.monotonic() + 60
            while not client.control.ping(timeout=1.0):
                if time.monotonic() > deadline:
                    raise RuntimeError("the bench worker did not come up")
            seconds, result = timed(lambda: client.send_task(task).get(timeout=3600))
            peak = peak_rss_kib(worker.pid) or 0
            return seconds, peak, result
        finally:
            worker.terminate()
            worker.wait(timeout=60)


def bench_scale(
    server_url: str,
    redis_url: str,
    plays: int,
    users: int,
    tracks: int,
    daily: int,
    repeats: int,
    keep: bool,
) -> dict[str, Any]:
    from db.migrate import upgrade
    from db.seed import SeedSpec, seed_url
    from tasks.listening.aggregation import aggregate_listening
    from tasks.trending.scoring import calculate_trending

    days = max(1, round(plays / daily))
    figures: dict[str, Any] = {"plays": plays, "days": days, "users": users, "tracks": tracks}
    with fresh_database(server_url, keep) as url:
        upgrade(url)
        log(f"{plays:,} plays: seeding {users:,} users, {tracks:,} tracks over {days} days")
        spec = SeedSpec(users=users, tracks=tracks, plays=plays, days=days, seed=7, now=NOW)
        figures["seed_seconds"] = round(seed_url(url, spec).seconds, 1)
        engine = create_engine(url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # what autovacuum would have done by now

        log("first full aggregation, through a real worker")
        seconds, peak_kib, report = worker_peak_memory_running(
            url, redis_url, "listening.aggregate"
        )
        figures["first_aggregation_seconds"] = round(seconds, 2)
        figures["first_aggregation_worker_peak_mib"] = round(peak_kib / 1024, 1)
        figures["first_aggregation_users"] = report["users_folded"]

        log("trending against its floor")
        window = {"now": NOW, "day_start": NOW - DAY, "week_start": NOW - 7 * DAY}
        floor_times, trending_times = [], []
        for _ in range(repeats):
            with Session(engine) as session, session.begin():
                # The same memory the job gives itself (tasks/trending/), for a fair floor.
                session.execute(text("SET LOCAL work_mem = '64MB'"))
                floor_times.append(timed(lambda s=session: s.execute(FLOOR_SQL, window).all())[0])
            with Session(engine) as session, session.begin():
                trending_times.append(timed(lambda s=session: calculate_trending(s, NOW, 500))[0])
        figures["trending_floor_seconds"] = round(statistics.median(floor_times), 3)
        figures["trending_seconds"] = round(statistics.median(trending_times), 3)
        figures["trending_vs_floor"] = round(
            figures["trending_seconds"] / figures["trending_floor_seconds"], 2
        )

        log("one more day of plays, then the incremental aggregation")
        with engine.begin() as conn:
            added = conn.execute(NEXT_DAY_SQL, window).rowcount
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE play_history"))
        figures["new_day_plays"] = added
        with Session(engine) as session, session.begin(), statement_timings(engine) as spent:
            seconds, report = timed(lambda: aggregate_listening(session, NOW + DAY))
        figures["incremental_slowest_statements"] = spent[:4]
        figures["incremental_seconds"] = round(seconds, 3)
        figures["incremental_users_folded"] = report.users_folded
        figures["incremental_windows_refreshed"] = report.windows_refreshed
        engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scales",
        default="1000000,10000000",
        help="comma-separated play counts; the first is the baseline",
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=200_000)
    parser.add_argument("--daily-plays", type=int, default=33_333)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the bench databases")
    args = parser.parse_args()
    server = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    os.environ.setdefault("DATABASE_URL", server)
    os.environ.setdefault("REDIS_URL", redis_url)

    results = [
        bench_scale(
            server,
            redis_url,
            int(plays),
            args.users,
            args.tracks,
            args.daily_plays,
            args.repeats,
            args.keep,
        )
        for plays in args.scales.split(",")
    ]
    base, top = results[0], results[-1]
    summary = {
        "scales": results,
        "incremental_largest_vs_smallest": round(
            top["incremental_seconds"] / base["incremental_seconds"], 2
        ),
        "trending_vs_floor_at_largest": top["trending_vs_floor"],
    }
    print(json.dumps(summary, indent=2))
    print(
        f"\nincremental aggregation, {top['plays']:,} vs {base['plays']:,} plays of history: "
        f"{summary['incremental_largest_vs_smallest']}x  (target <= 1.3)\n"
        f"trending vs one bare SQL statement at {top['plays']:,} plays: "
        f"{summary['trending_vs_floor_at_largest']}x  (target <= 1.5)\n"
        f"first full aggregation at {top['plays']:,} plays: "
        f"{top['first_aggregation_seconds']} s, worker peak RSS "
        f"{top['first_aggregation_worker_peak_mib']} MiB"
    )


if __name__ == "__main__":
    main()
