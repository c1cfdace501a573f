"""The operators' tasks: ``automation.status``, ``automation.trigger``, ``automation.ping``,
and ``cleanup.task_runs`` (run history past its retention). The work is in
``tasks.automation.status`` and ``tasks.automation.history``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tasks.automation.history import delete_old_task_runs
from tasks.automation.status import collect_status, send_trigger
from worker.arguments import JsonObject, ShortName
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.settings import get_settings


@app.task(name="automation.status", bind=True)
def status(self: AutomationTask) -> dict[str, Any]:
    # Redis, which keeps the journal and heartbeats, whichever broker carries the messages.
    redis_url = get_settings().redis_url
    return collect_status(self.session, self.app, dt.datetime.now(dt.UTC), redis_url)


@app.task(name="automation.trigger", bind=True)
def trigger(
    self: AutomationTask, task: ShortName, kwargs: JsonObject | None = None
) -> dict[str, Any]:
    return {"triggered": send_trigger(self.app, task, kwargs)}


@app.task(name="automation.ping", bind=True)
def ping(self: AutomationTask) -> dict[str, str]:
    """The health check another service or an operator sends by name: no database work."""
    return {"worker": str(self.request.hostname), "time": dt.datetime.now(dt.UTC).isoformat()}


@app.task(name="cleanup.task_runs", bind=True)
def task_runs(self: AutomationTask) -> dict[str, int]:
    return {"deleted": delete_old_task_runs(self.session, dt.datetime.now(dt.UTC), get_settings())}
