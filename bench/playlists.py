"""Smart playlists at scale: chunked generation against user-by-user, and the whole
fan-out through real workers.

    python -m bench.playlists --database-url postgresql+psycopg://.../bench_xxxx
    python -m bench.playlists                       # seeds its own 100k users first

The database must hold a seeded, aggregated history (bench/analytics.py --keep leaves
one: 100k users, 10M plays). Three figures, in one run:

1. the baseline: the same generator invoked once per user (every statement of the chunk
   pipeline run for one user at a time), over the active users of one production chunk
   of ids; seconds per user (median of three runs);
2. chunked: the same users as one chunk; seconds per user (median of three), and the
   speed-up (target 10x);
3. the fan-out: ``playlists.generate_all(force=True)`` by name through real worker
   processes (playlists queue, plus a default worker for the chord's bookkeeping), wall
   time, users per second, and each worker process's peak resident memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from typing import Any

import psutil
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from bench.analytics import NOW, fresh_database, log, peak_rss_kib, timed
from worker.stack import celery_argv

KINDS = ["daily_mix", "discovery_weekly", "new_for_you", "forgotten_favorites"]


def seeded_database(server_url: str) -> str:
    from db.migrate import upgrade
    from db.seed import SeedSpec, seed_url
    from tasks.listening.aggregation import aggregate_listening

    context = fresh_database(server_url, keep=True)
    url = context.__enter__()
    upgrade(url)
    log("seeding 100k users, 200k tracks, 3M plays over 90 days")
    seed_url(
        url, SeedSpec(users=100_000, tracks=200_000, plays=3_000_000, days=90, seed=7, now=NOW)
    )
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        aggregate_listening(session, NOW)
    # What autovacuum would have done by now, as bench/analytics.py does. Without it the
    # BRIN index on play_history.ingest_xid stays unsummarized, so "plays since the
    # watermark" reads the whole table for each single user (~280 ms): an unfair baseline.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return url


def peak_rss_mib(process: psutil.Process) -> float:
    """Peak resident memory of a process and its children (VmHWM), in MiB."""
    peaks = [peak_rss_kib(p.pid) for p in [process, *process.children(recursive=True)]]
    return max((kib / 1024 for kib in peaks if kib is not None), default=0.0)


def wait_for_workers(client: Any, workers: list[subprocess.Popen[bytes]]) -> None:
    while len(client.control.ping(timeout=1.0) or []) < len(workers):
        if any(w.poll() is not None for w in workers):
            raise SystemExit(
                "a worker exited at start-up (is the database migrated? automation db upgrade)"
            )
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a seeded and aggregated database")
    parser.add_argument(
        "--sample",
        type=int,
        default=None,
        help="user ids in the comparison (default: one production chunk)",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="playlist worker processes")
    args = parser.parse_args()
    server = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    url = args.database_url or seeded_database(server)
    os.environ.update(DATABASE_URL=url, REDIS_URL=redis_url)

    from tasks.playlists.generation import ACTIVE_WITHIN, CHUNK_USERS, generate_playlists

    span = args.sample or CHUNK_USERS

    engine = create_engine(url)
    with engine.connect() as conn:
        users = conn.scalar(text("SELECT count(*) FROM users"))
        # A sample of users with history: the first ones past the median id.
        first = conn.scalar(
            text("SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY id) FROM users")
        )
    now = dt.datetime.now(dt.UTC)
    sample = range(first, first + span)
    with engine.connect() as conn:
        # The chunk writes only active users' playlists; the baseline does the same users.
        active = conn.scalars(
            text("""
            SELECT u.id FROM users u LEFT JOIN user_listening_stats s ON s.user_id = u.id
            WHERE u.id >= :lo AND u.id < :hi
              AND (u.created_at > :since OR s.last_played_at > :since) ORDER BY u.id"""),
            {"lo": sample.start, "hi": sample.stop, "since": now - ACTIVE_WITHIN},
        ).all()

    def generate(**users: int) -> dict[str, int]:
        # One transaction each, as a task has; rolled back, so the fan-out starts clean.
        with Session(engine) as session:
            written = generate_playlists(session, KINDS, now, **users)
            session.rollback()
            return written

    # Median of three runs each: this machine is shared and noisy.
    log(f"baseline: the {len(active)} active users of {span} ids, one at a time (x3)")
    baseline = statistics.median(
        timed(lambda: [generate(user_id=u) for u in active])[0] for _ in range(3)
    )
    log("the same users as one chunk (x3)")
    chunk_runs = [timed(lambda: generate(lo=sample.start, hi=sample.stop)) for _ in range(3)]
    chunked, written = statistics.median(t for t, _ in chunk_runs), chunk_runs[0][1]

    log(f"fan-out over {users:,} users through real workers")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as data_dir:
        env["DATA_DIR"] = data_dir
        tag = uuid.uuid4().hex[:6]
        workers = [
            subprocess.Popen(
                celery_argv(
                    "worker",
                    "--queues",
                    queue,
                    "--concurrency",
                    str(concurrency),
                    "--hostname",
                    f"{queue}-{tag}@%h",
                    "--loglevel",
                    "WARNING",
                ),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for queue, concurrency in (("playlists", args.concurrency), ("default,celery", 1))
        ]
        try:
            from worker.celery_app import create_app
            from worker.settings import Settings

            client = create_app(Settings(database_url=url, redis_url=redis_url))
            wait_for_workers(client, workers)
            fan_out, counts = timed(
                lambda: client.send_task("playlists.generate_all", kwargs={"force": True}).get(
                    timeout=3600
                )
            )
            peaks = [round(peak_rss_mib(psutil.Process(w.pid)), 1) for w in workers]
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=60)
    engine.dispose()

    per_user_baseline = baseline / len(active)
    per_user_chunked = chunked / len(active)
    print(
        f"baseline, user by user: {per_user_baseline * 1000:.1f} ms a user "
        f"({len(active)} active users, {baseline:.1f} s)\n"
        f"chunked, same users:    {per_user_chunked * 1000:.2f} ms a user "
        f"({chunked:.2f} s; wrote {written})\n"
        f"speed-up: {per_user_baseline / per_user_chunked:.1f}x  (target >= 10)\n"
        f"fan-out through workers: {users:,} users in {fan_out:.1f} s = "
        f"{users / fan_out:,.0f} users/s; written {counts}\n"
        f"peak RSS per worker (playlists, default): {peaks} MiB"
    )


if __name__ == "__main__":
    main()
