"""Tasks that exist only for tests, added to the production app by the worker subprocesses
of the tests that need them (``celery -A tests.system.extra_tasks worker``); the production app
never has them. All are in the analysis family, so they run on the analysis queue, which
the in-process test worker never consumes (a message this module's tasks took there would
end the test run or find no such task)."""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import text

from db.session import get_engine
from worker.celery_app import app
from worker.ledger import LedgerTask

__all__ = ["app"]


@app.task(name="analysis.test_kill_own_worker")
def kill_own_worker() -> None:
    """Kill the worker child running it, as a segfault or the kernel's OOM killer would."""
    os._exit(1)


@app.task(name="analysis.test_write_nothing", bind=True, base=LedgerTask)
def write_nothing(
    self: LedgerTask, track_id: int, background_task_id: int | None = None
) -> dict[str, Any]:
    """A ledger task whose body does no database work: its row completes all the same."""
    return {"wrote": "nothing", "track_id": track_id}


@app.task(name="analysis.test_sleep", bind=True)
def sleep(self: Any, seconds: float, redelivered_seconds: float = 0.0) -> str:
    """Hold a worker for ``seconds`` (``redelivered_seconds`` once the broker handed the
    message back after its worker died): what a long aggregation does to a worker."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    time.sleep(redelivered_seconds if redelivered else seconds)
    return self.request.hostname


@app.task(name="analysis.test_lose_claim", bind=True, base=LedgerTask)
def lose_claim(self: LedgerTask, track_id: int, background_task_id: int | None = None) -> str:
    """Change the track's title, but not before the row was taken from this run, as the
    rescue does to a worker presumed dead and a second message then does (another
    connection: the run's own transaction cannot see it)."""
    with get_engine().begin() as other:
        other.execute(
            text(
                "UPDATE background_tasks SET celery_task_id = 'the second message', "
                "attempts = attempts + 1 WHERE id = :id"
            ),
            {"id": background_task_id},
        )
    self.session.execute(
        text("UPDATE tracks SET title = 'written by a run that lost its claim' WHERE id = :id"),
        {"id": track_id},
    )
    return "done"


@app.task(name="analysis.test_reopen_upload", bind=True)
def reopen_upload(self: Any, upload_id: int) -> None:
    """Take an upload back to processing and complete it again, in the run's transaction:
    what a task a workflow starts may do to the very job that fired it."""
    for status in ("processing", "completed"):
        self.session.execute(
            text("UPDATE upload_jobs SET status = :status WHERE id = :id"),
            {"status": status, "id": upload_id},
        )
