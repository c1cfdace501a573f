"""The trending family's task: ``trending.calculate``. The work is in ``tasks.trending.scoring``."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

from tasks.trending.scoring import calculate_trending
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.settings import get_settings


@app.task(name="trending.calculate", bind=True)
def calculate(self: AutomationTask) -> dict[str, Any]:
    report = calculate_trending(
        self.session, dt.datetime.now(dt.UTC), get_settings().trending_top_n
    )
    return asdict(report)
