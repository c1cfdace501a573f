"""The listening family's tasks: ``listening.aggregate`` and ``listening.aggregate_user``.
The work is in ``tasks.listening.aggregation``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

from tasks.listening.aggregation import aggregate_listening, aggregate_user
from worker.arguments import Id
from worker.base_task import AutomationTask
from worker.celery_app import app


@app.task(name="listening.aggregate", bind=True)
def aggregate(self: AutomationTask) -> dict[str, Any]:
    return asdict(aggregate_listening(self.session, dt.datetime.now(dt.UTC)))


@app.task(name="listening.aggregate_user", bind=True)
def aggregate_one_user(self: AutomationTask, user_id: Id) -> dict[str, Any]:
    return asdict(aggregate_user(self.session, user_id, dt.datetime.now(dt.UTC)))
