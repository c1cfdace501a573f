"""The ledger's cost: N trivial tasks through ledger, Redis and a real worker, against plain
Celery no-op tasks on the same app, in the same run.

    python -m bench.background [--tasks 2000] [--rounds 3] [--concurrency 2]

Both kinds run on one worker subprocess (prefork, ``--concurrency`` children) consuming the
default queue; the rounds alternate plain and ledger, and the medians are compared. A
round's rate is N over the time from the first publish (for the ledger: from the INSERT of
the rows) to the last completion seen. Ledger latency is per row, ``completed_at -
created_at`` (insert to completed), reported as p50 and p99.

The target: the ledger's rate is at least 50% of plain Celery's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from bench.analytics import fresh_database, log


def wait_until(probe: Any, want: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while (have := probe()) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {have} of {want} tasks finished in {timeout} s")
        time.sleep(0.05)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    server = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    with (
        fresh_database(server, keep=bool(os.environ.get("BENCH_KEEP"))) as url,
        tempfile.TemporaryDirectory() as data_dir,
    ):
        os.environ.update(DATABASE_URL=url, REDIS_URL=redis_url, DATA_DIR=data_dir)
        from db.migrate import upgrade

        upgrade(url)
        run(url, redis_url, data_dir, args)


def seed_tracks(conn: Any, n: int) -> list[int]:
    """``n`` tracks for ledger rows to name; their ids."""
    conn.execute(text("INSERT INTO artists (name) VALUES ('bench')"))
    # Tracks with a genre and no audio: the insert trigger queues nothing for them.
    conn.execute(
        text(
            "INSERT INTO tracks (title, artist_id, genre) "
            "SELECT 'track ' || i, (SELECT min(id) FROM artists), 'rock' "
            "FROM generate_series(1, :n) i"
        ),
        {"n": n},
    )
    return list(conn.scalars(text("SELECT id FROM tracks ORDER BY id")))


def run(url: str, redis_url: str, data_dir: str, args: argparse.Namespace) -> None:
    from bench.background_tasks import app
    from worker.ledger import enqueue

    engine = create_engine(url)
    n = args.tasks
    with engine.begin() as conn:
        track_ids = seed_tracks(conn, n)
    app.connection_for_write().default_channel.client.flushdb()

    name = f"bench-{uuid.uuid4().hex[:6]}@%h"
    log_file = open(os.path.join(data_dir, "worker.log"), "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.background_tasks",
            "worker",
            "--queues",
            "default",
            "--concurrency",
            str(args.concurrency),
            "--pool",
            "prefork",
            "--hostname",
            name,
            "--loglevel",
            "WARNING",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        while not app.control.ping(timeout=1.0):
            time.sleep(0.5)

        def plain_round() -> float:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM task_runs WHERE task_name = 'bench.noop'"))
            start = time.monotonic()
            with app.producer_or_acquire() as producer:
                for track_id in track_ids:
                    app.send_task("bench.noop", args=(track_id,), producer=producer)

            def done() -> int:
                with engine.connect() as conn:
                    return int(
                        conn.scalar(
                            text(
                                "SELECT count(*) FROM task_runs "
                                "WHERE task_name = 'bench.noop' AND status = 'success'"
                            )
                        )
                    )

            return n / (wait_until(done, n) - start)

        latencies: list[float] = []

        def ledger_round() -> float:
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM background_tasks"))
            start = time.monotonic()
            with Session(engine) as session, session.begin():
                for track_id in track_ids:
                    enqueue(session, app, "ledger_noop", track_id)

            def done() -> int:
                with engine.connect() as conn:
                    return int(
                        conn.scalar(
                            text("SELECT count(*) FROM background_tasks WHERE status = 'completed'")
                        )
                    )

            rate = n / (wait_until(done, n) - start)
            with engine.connect() as conn:
                latencies.extend(
                    conn.scalars(
                        text(
                            "SELECT extract(epoch FROM completed_at - created_at) "
                            "FROM background_tasks"
                        )
                    )
                )
            return rate

        plain, ledger = [], []
        for round_ in range(1, args.rounds + 1):
            plain.append(plain_round())
            ledger.append(ledger_round())
            log(f"round {round_}: plain {plain[-1]:.0f}/s, ledger {ledger[-1]:.0f}/s")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log_file.close()
        if os.environ.get("BENCH_SHOW_WORKER_LOG"):
            print(Path(log_file.name).read_text()[-5000:])
    engine.dispose()

    plain_rate, ledger_rate = statistics.median(plain), statistics.median(ledger)
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"{n} tasks a round, {args.rounds} rounds, one worker with {args.concurrency} "
        f"prefork children\n"
        f"plain Celery no-op:  {plain_rate:,.0f} tasks/s (median; rounds "
        f"{', '.join(f'{r:.0f}' for r in plain)})\n"
        f"ledger no-op:        {ledger_rate:,.0f} tasks/s (median; rounds "
        f"{', '.join(f'{r:.0f}' for r in ledger)})\n"
        f"ledger / plain:      {ledger_rate / plain_rate:.0%}  (target >= 50%)\n"
        f"ledger latency, insert to completed: p50 {quantiles[49] * 1000:.0f} ms, "
        f"p99 {quantiles[98] * 1000:.0f} ms (a backlog of {n} queued at once)"
    )


if __name__ == "__main__":
    main()
