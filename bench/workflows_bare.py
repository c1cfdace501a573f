"""The floor bench/workflows.py measures executions against: a bare Celery app (nothing of
ours) whose one task POSTs a given body with given headers to a URL.

The same configuration as ``bench.bare_app`` (Redis broker ``BENCH_REDIS_URL``, JSON, no
result backend, late acks, prefetch 1) on its own queue. Each worker child keeps one
``httpx.Client`` (the receiver closes every connection, so it saves no connection, only
building a client per post). A failed POST raises: the bench counts what arrived.

    celery -A bench.workflows_bare worker --queues bench_wf_bare
"""

from __future__ import annotations

from functools import cache

import httpx

from bench.bare_app import bare_celery

QUEUE = "bench_wf_bare"
TASK = "bench.bare_webhook"

app = bare_celery("bench_wf_bare", QUEUE)


@cache
def _client() -> httpx.Client:
    return httpx.Client()  # one per worker child: first used after the fork


@app.task(name=TASK)
def post(url: str, body: str, headers: dict[str, str]) -> None:
    response = _client().post(
        url,
        content=body.encode(),
        headers={"Content-Type": "application/json", **headers},
        timeout=10.0,
    )
    response.raise_for_status()
