"""The monitoring family's task: ``monitoring.check_alerts``, every minute (beat_schedule.py).
The work is in ``tasks.monitoring.alerts``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tasks.monitoring.alerts import check_alerts as run_check
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.redis_client import get_redis
from worker.settings import get_settings


@app.task(name="monitoring.check_alerts", bind=True)
def check_alerts(self: AutomationTask) -> dict[str, Any]:
    return run_check(self.session, get_redis(), dt.datetime.now(dt.UTC), get_settings())
