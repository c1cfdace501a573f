"""The two trivial tasks bench/background.py compares, on the production app.

``bench.noop`` is a plain Celery task; ``bench.ledger_noop`` is the same no-op as a ledger
task (claim, complete). Everything else is shared: broker, routing (both land on the
default queue), result backend, run history. The difference is the ledger's cost.
Loaded only by the benchmark's worker (``celery -A bench.background_tasks worker``).
"""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.celery_app import app
from worker.ledger import LedgerTask

__all__ = ["app"]


@app.task(name="bench.noop", base=Task)
def noop(track_id: int) -> None:
    return None


@app.task(name="bench.ledger_noop", bind=True, base=LedgerTask)
def ledger_noop(
    self: LedgerTask, track_id: int, background_task_id: int | None = None
) -> dict[str, Any]:
    return {}
