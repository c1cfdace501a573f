"""A task that kills the worker child running it, as a segfault or the kernel's OOM killer
would. Loaded only by the worker subprocesses of tests that need such a death
(``celery -A tests.worker_killer worker``); the production app never has it."""

from __future__ import annotations

import os

from worker.celery_app import app

__all__ = ["app"]


# In the analysis family, so it runs on the analysis queue: the in-process test worker
# never consumes that one (a message this task took would end the test run).
@app.task(name="analysis.test_kill_own_worker")
def kill_own_worker() -> None:
    os._exit(1)
