"""The floor bench/throughput.py measures against: a bare Celery app with nothing of ours.

Redis broker (``BENCH_REDIS_URL``, default database 5), JSON, no result backend, late acks,
prefetch multiplier 1, one no-op task on its own queue. No settings, signals, run history,
routing, events or time limits: what Celery itself costs per task on this machine.

    celery -A bench.bare_app worker --queues bench_bare
"""

from __future__ import annotations

import os

from celery import Celery

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
QUEUE = "bench_bare"
TASK = "bench.bare_noop"

app = Celery(
    "bench_bare",
    broker=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
    # The benchmark process also holds the production app: leave it the current one.
    set_as_current=False,
)
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
)


@app.task(name=TASK)
def noop() -> None:
    return None
