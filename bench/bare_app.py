"""The floor bench/throughput.py measures against: a bare Celery app with nothing of ours.

Redis broker (``BENCH_REDIS_URL``, default database 5), JSON, no result backend, late acks,
prefetch multiplier 1, one no-op task on its own queue. No settings, signals, run history,
routing, events or time limits: what Celery itself costs per task on this machine.

A second task is the floor of the ledger's work: the same bare app claiming and completing
a ``background_tasks`` row with the ledger's two statements, by plain psycopg on one
connection per process (autocommit claim, then a transaction for the completion, commits
not waiting for the disk). No SQLAlchemy, no fencing checks beyond the SQL's own, no run
history, no retries: what PostgreSQL's part of a ledger task costs at least.

    celery -A bench.bare_app worker --queues bench_bare
"""

from __future__ import annotations

import os
from functools import cache

import psycopg
from celery import Celery
from sqlalchemy.engine import make_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
QUEUE = "bench_bare"
TASK = "bench.bare_noop"
SQL_TASK = "bench.bare_ledger_noop"

# The ledger's claim and completion (worker/ledger/ledger.sql), with psycopg's placeholders.
CLAIM = """
UPDATE background_tasks
SET status = 'processing', attempts = attempts + 1, started_at = now(), completed_at = NULL,
    celery_task_id = %(celery_task_id)s, worker_host = %(worker_host)s
WHERE id = %(id)s AND status = 'pending'
RETURNING attempts
"""
COMPLETE = """
UPDATE background_tasks
SET status = 'completed', completed_at = now(), result = '{}'::jsonb, error_message = NULL
WHERE id = %(id)s AND status = 'processing' AND celery_task_id = %(celery_task_id)s
  AND attempts = %(attempt)s
"""


def bare_celery(name: str, queue: str) -> Celery:
    """A bare Celery app as the floors use it: Redis broker, JSON, no result backend, late
    acks, prefetch 1, ``queue`` its default."""
    bare = Celery(
        name,
        broker=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        # The benchmark process also holds the production app: leave it the current one.
        set_as_current=False,
    )
    bare.conf.update(
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
    )
    return bare


app = bare_celery("bench_bare", QUEUE)


@app.task(name=TASK)
def noop() -> None:
    return None


@cache
def _connection() -> psycopg.Connection:
    # One per worker child (the cache is empty after the fork: first used in the child).
    url = make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql")
    return psycopg.connect(
        url.render_as_string(hide_password=False), options="-c synchronous_commit=off"
    )


@app.task(name=SQL_TASK, bind=True)
def ledger_noop(self: object, row_id: int) -> None:
    conn = _connection()
    task_id = self.request.id  # type: ignore[attr-defined]
    conn.autocommit = True
    claimed = conn.execute(
        CLAIM, {"id": row_id, "celery_task_id": task_id, "worker_host": "bare"}
    ).fetchone()
    if claimed is None:
        return
    conn.autocommit = False
    with conn.transaction():
        conn.execute(COMPLETE, {"id": row_id, "celery_task_id": task_id, "attempt": claimed[0]})
