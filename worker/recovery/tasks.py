"""The recovery tasks: ``cleanup.stuck_tasks`` (beat, every minute) and
``cleanup.broker_reset`` (sent by a worker that finds Redis without its epoch)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field

from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.recovery.broker_reset import recover_from_broker_reset
from worker.recovery.rescue import rescue
from worker.redis_client import get_redis
from worker.settings import get_settings

Epoch = Annotated[str, Field(strict=True, pattern=r"^\d+(\.\d+)?:[0-9a-f]+$", max_length=64)]
Hostname = Annotated[str, Field(strict=True, max_length=255)]


@app.task(name="cleanup.stuck_tasks", bind=True)
def stuck_tasks(self: AutomationTask) -> dict[str, int]:
    return rescue(self.session, self.app, get_redis(), dt.datetime.now(dt.UTC), get_settings())


@app.task(name="cleanup.broker_reset", bind=True)
def broker_reset(
    self: AutomationTask, epoch: Epoch, detected_by: Hostname | None = None
) -> dict[str, int]:
    return recover_from_broker_reset(
        self.session, self.app, epoch, detected_by, dt.datetime.now(dt.UTC)
    )
