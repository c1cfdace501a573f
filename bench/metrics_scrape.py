"""What one Prometheus scrape of the console's ``/metrics`` costs on a 10M-play database.

    python -m bench.metrics_scrape                  # seed (once, kept) and measure
    python -m bench.metrics_scrape --scrapes 200    # more scrapes for the median
    python -m bench.metrics_scrape --reseed         # drop the kept database and seed again

The database (``bench_metrics_10m`` on BENCH_DATABASE_URL's server, default the local
PostgreSQL) is seeded once with ``automation seed``'s generator at the analytics bench's
shape (100k users, 200k tracks, 10M plays over 300 days, 500k imported listens) and kept,
since seeding takes minutes; on top of it, a history such a system would have after months:
1M completed and 2,000 pending ledger rows, 2M task runs, 5,000 dead letters. Redis
(BENCH_REDIS_URL, default db 13) gets run counters for every public task.

A scrape is timed end to end over real HTTP (uvicorn in a thread, a viewer's bearer token,
``/metrics``), warm: the median of ``--scrapes`` after a few discarded. Target: under 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import time

import psycopg
from sqlalchemy.engine import make_url

DATABASE = "bench_metrics_10m"
NOW = dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.UTC)

HISTORY_SQL = [
    # Months of finished ledger work: what the ledger's own retention keeps around.
    """
    INSERT INTO background_tasks (task_type, track_id, status, attempts, created_at,
                                  enqueued_at, started_at, completed_at)
    SELECT (ARRAY['mood_detection', 'energy_analysis', 'genre_classification'])[1 + i % 3],
           NULL, CASE WHEN i % 200 = 0 THEN 'failed' ELSE 'completed' END, 1,
           now() - make_interval(secs => i), now() - make_interval(secs => i),
           now() - make_interval(secs => i), now() - make_interval(secs => i - 2)
    FROM generate_series(1, 1000000) AS i
    """,
    # A backlog: 2,000 rows waiting, the oldest two hours.
    """
    INSERT INTO background_tasks (task_type, track_id, status, created_at, enqueued_at)
    SELECT 'energy_analysis', NULL, 'pending', now() - make_interval(secs => i * 3.6),
           now() - make_interval(secs => i * 3.6)
    FROM generate_series(1, 2000) AS i
    """,
    # Run history: every public task, finished, over the retention period.
    """
    INSERT INTO task_runs (task_id, task_name, status, queue, started_at, finished_at,
                           runtime_seconds)
    SELECT md5(i::text),
           (ARRAY['listening.aggregate', 'trending.calculate', 'playlists.generate_all',
                  'cleanup.stuck_tasks', 'enrichment.enrich_pending', 'automation.ping',
                  'analysis.energy_analysis', 'monitoring.check_alerts'])[1 + i % 8],
           CASE WHEN i % 50 = 0 THEN 'failure' ELSE 'success' END, 'default',
           now() - make_interval(secs => i), now() - make_interval(secs => i - 1), 1.0
    FROM generate_series(1, 2000000) AS i
    """,
    """
    INSERT INTO dead_letters (reason, task_name, received_at)
    SELECT 'unknown task', 'nope.' || i, now() - make_interval(mins => i)
    FROM generate_series(1, 5000) AS i
    """,
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def admin_conninfo(server_url: str) -> str:
    return make_url(server_url).set(drivername="postgresql").render_as_string(False)


def database_url(server_url: str) -> str:
    return make_url(server_url).set(database=DATABASE).render_as_string(hide_password=False)


def ensure_database(server_url: str, plays: int, reseed: bool) -> str:
    """The kept bench database, seeded if it is not there yet (or ``reseed``)."""
    url = database_url(server_url)
    with psycopg.connect(admin_conninfo(server_url), autocommit=True) as conn:
        if reseed:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if exists:
            with psycopg.connect(admin_conninfo(url), autocommit=True) as bench:
                ready = bench.execute("SELECT obj_description('play_history'::regclass)").fetchone()
            if ready and ready[0] == f"bench seeded: {plays}":
                log(f"reusing {DATABASE} ({plays:,} plays); migrating it to head")
                from db.migrate import upgrade

                upgrade(url)
                return url
            conn.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')

    from db.migrate import upgrade
    from db.seed import SeedSpec, seed_url

    upgrade(url)
    days = max(1, round(plays / 33_333))
    log(f"seeding {plays:,} plays over {days} days (minutes; the database is kept)")
    spec = SeedSpec(users=100_000, tracks=200_000, plays=plays, days=days, seed=7, now=NOW)
    report = seed_url(url, spec)
    log(f"seeded in {report.seconds:.0f} s; adding ledger, run and dead-letter history")
    with psycopg.connect(admin_conninfo(url), autocommit=True) as conn:
        for statement in HISTORY_SQL:
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE")  # what autovacuum would have done by now
        conn.execute(f"COMMENT ON TABLE play_history IS 'bench seeded: {plays}'")
    return url


# The default schedule's fires over 30 days (every minute for the minutely entries, every
# ten minutes for the others), each pointing at a run of the history above.
FIRES_SQL = """
    INSERT INTO schedule_fires (entry, slot, fired_at, task, args, kwargs, task_id, token,
                                published_at)
    SELECT e.name, s.slot, s.slot, e.task, '[]', '{}', md5((row_number() OVER ())::text), 1,
           s.slot
    FROM schedule_entries AS e
    CROSS JOIN LATERAL generate_series(
        date_trunc('minute', now()) - interval '30 days', date_trunc('minute', now()),
        CASE WHEN e.cron = '* * * * *' THEN interval '1 minute' ELSE interval '10 minutes' END
    ) AS s (slot)
    ON CONFLICT DO NOTHING
"""


def prepare(url: str, redis_url: str) -> str:
    """The live schedule with a month of fires, run counters and heartbeats in Redis, and a
    viewer's token (what Prometheus would hold); returns the token."""
    import redis
    from sqlalchemy import create_engine, func, select, text
    from sqlalchemy.orm import Session

    import beat_schedule
    from console.accounts import AccountError, create_admin, issue_token
    from db.models import ScheduleFire
    from worker import liveness
    from worker.queues import QUEUE_NAMES
    from worker.run_journal import DURATION_BUCKETS, RunCount
    from worker.schedules.store import defaults_from, reconcile

    engine = create_engine(url)
    with Session(engine) as session:
        reconcile(session, defaults_from(beat_schedule.SCHEDULE, "UTC"), dt.datetime.now(dt.UTC))
        if not session.scalar(select(func.count()).select_from(ScheduleFire)):
            session.execute(text(FIRES_SQL))
        with contextlib.suppress(AccountError):  # kept from an earlier run
            create_admin(session, "bench-prometheus", "viewer")
        token, _ = issue_token(session, "bench-prometheus")
        session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE schedule_fires"))
    engine.dispose()

    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline()
    tasks = [name for entry in beat_schedule.SCHEDULE.values() for name in [entry["task"]]]
    for task in [*tasks, "automation.ping", "analysis.energy_analysis"]:
        for i, seconds in enumerate(DURATION_BUCKETS):
            status = "failure" if i % 5 == 0 else "success"
            RunCount.of(task, {"status": status, "runtime_seconds": seconds}).add_to(pipe)
    for i, queue in enumerate(QUEUE_NAMES):
        liveness.beat_heart(client, f"bench-{i}@host", 600, {"queues": [queue]})
    pipe.execute()
    client.close()
    return token


def measure(url: str, redis_url: str, scrapes: int) -> dict[str, object]:
    import httpx

    from console import metrics
    from console.context import Console
    from tests.support import serve_console
    from worker import app as celery_app
    from worker.settings import get_settings

    token = prepare(url, redis_url)
    headers = {"Authorization": f"Bearer {token}"}
    http_ms: list[float] = []
    with serve_console() as base, httpx.Client(base_url=base, headers=headers) as client:
        for i in range(scrapes + 5):
            started = time.perf_counter()
            answer = client.get("/metrics")
            took = (time.perf_counter() - started) * 1000
            answer.raise_for_status()
            if i >= 5:  # the first ones open connections and warm caches
                http_ms.append(took)
        body = answer.text
    # The collector alone, without HTTP and the token check.
    ctx = Console.build(get_settings(), celery_app)
    collect_ms = []
    for _ in range(scrapes):
        started = time.perf_counter()
        metrics.render(ctx)
        collect_ms.append((time.perf_counter() - started) * 1000)
    ctx.close()
    return {
        "database": DATABASE,
        "scrapes": scrapes,
        "http_scrape_ms_median": round(statistics.median(http_ms), 1),
        "http_scrape_ms_p95": round(sorted(http_ms)[int(len(http_ms) * 0.95) - 1], 1),
        "collector_ms_median": round(statistics.median(collect_ms), 1),
        "samples": sum(1 for line in body.splitlines() if line and not line.startswith("#")),
        "target_ms": 50,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plays", type=int, default=10_000_000)
    parser.add_argument("--scrapes", type=int, default=100)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--seed-only", action="store_true")
    args = parser.parse_args()
    server = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    # Before anything reads the settings (they are read once): the console under test,
    # its sessions and its Redis client use the bench database and Redis.
    os.environ["DATABASE_URL"] = database_url(server)
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("ENVIRONMENT", "development")
    url = ensure_database(server, args.plays, args.reseed)
    if args.seed_only:
        return
    figures = measure(url, redis_url, args.scrapes)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
