"""The operators' tasks: ``automation.status``, ``automation.trigger``, ``automation.ping``,
and ``cleanup.task_runs`` (run history past its retention). The work is in
``tasks.automation.status`` and ``tasks.automation.history``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery import chain

from tasks.automation.history import delete_old_task_runs
from tasks.automation.status import collect_status, ordered_stages, resolve_trigger
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
    names = resolve_trigger(self.app, task)
    in_order, rest = ordered_stages(names) if task == "all" else ([], names)
    sent = []
    if in_order:
        # A chain: each starts once the one before has succeeded (DEPENDENCY_ORDER).
        last = chain(
            *(self.app.signature(name, kwargs=kwargs or {}, immutable=True) for name in in_order)
        ).apply_async()
        ids = []
        while last is not None:
            ids.append(last.id)
            last = last.parent
        sent += [{"task": n, "task_id": i} for n, i in zip(in_order, reversed(ids), strict=True)]
    sent += [
        {"task": name, "task_id": self.app.send_task(name, kwargs=kwargs or {}).id} for name in rest
    ]
    return {"triggered": sent}


@app.task(name="automation.ping", bind=True)
def ping(self: AutomationTask) -> dict[str, str]:
    """The health check another service or an operator sends by name: no database work."""
    return {"worker": str(self.request.hostname), "time": dt.datetime.now(dt.UTC).isoformat()}


@app.task(name="cleanup.task_runs", bind=True)
def task_runs(self: AutomationTask) -> dict[str, int]:
    return {"deleted": delete_old_task_runs(self.session, dt.datetime.now(dt.UTC), get_settings())}
