"""The workflows family's tasks: ``workflows.execute`` (published by the dispatcher, one per
execution) and ``cleanup.workflow_logs`` (daily, beat_schedule.py). The work is in
``tasks.workflows.execution`` and ``tasks.workflows.retention``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery.exceptions import Ignore

from tasks.workflows.execution import Runner
from tasks.workflows.retention import prune
from tasks.workflows.webhooks import shared_client
from worker.arguments import Id
from worker.backoff import whole_seconds
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.settings import get_settings

# Deferrals while a key's concurrency limit is reached, before the message gives up (the
# row stays pending; the lost-message rule publishes it again).
MAX_BUSY_DEFERRALS = 600


@app.task(name="workflows.execute", bind=True)
def execute(self: AutomationTask, execution_id: Id) -> dict[str, Any]:
    request = self.request
    runner = Runner(
        app,
        get_settings(),
        celery_task_id=str(request.id),
        hostname=str(request.hostname),
        resumable=bool(request.retries) or getattr(request, "delivery", 1) > 1,
        http=shared_client(),
    )
    verdict = runner.run(execution_id)
    if verdict.status == "not claimed":
        self.request.run_outcome = "duplicate"
        raise Ignore(verdict.detail)
    if verdict.retry_in is not None:
        raise self.retry(
            countdown=whole_seconds(verdict.retry_in),
            # Action retries are bounded by the execution's max_attempts; this bounds the
            # deferrals of a busy concurrency key.
            max_retries=MAX_BUSY_DEFERRALS,
            exc=RuntimeError(verdict.detail),
        )
    return {"execution_id": execution_id, "status": verdict.status, "detail": verdict.detail}


@app.task(name="cleanup.workflow_logs", bind=True)
def workflow_logs(self: AutomationTask) -> dict[str, int]:
    return prune(self.session, dt.datetime.now(dt.UTC), get_settings())
