"""The ledger's housekeeping task, on beat's schedule: retention. (Its rescue runs with the
rest of the recovery, in ``worker.recovery``.)"""

from __future__ import annotations

import datetime as dt

from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.ledger.retention import delete_old_background_tasks
from worker.settings import get_settings


@app.task(name="cleanup.background_tasks", bind=True)
def background_tasks(self: AutomationTask) -> dict[str, int]:
    return delete_old_background_tasks(self.session, dt.datetime.now(dt.UTC), get_settings())
