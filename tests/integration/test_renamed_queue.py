"""A queue renamed in a deploy: what waited on its old name still runs."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from db.models import TaskRun
from tests.support import wait_for


@pytest.mark.committed
def test_a_message_left_on_the_renamed_analytics_queue_still_runs(
    app: Any, celery_worker: Any, session: Any
) -> None:
    # Published before the deploy that renamed "analytics" to "stats": the workers that
    # took over its families drain the old name too.
    result = app.send_task("trending.calculate", queue="analytics")

    report = result.get(timeout=60)

    assert report["status"] == "done"

    def finished() -> list[tuple[str, str | None]]:
        session.expire_all()
        runs = session.scalars(select(TaskRun).where(TaskRun.task_id == result.id))
        return [(run.status, run.queue) for run in runs if run.finished_at]

    assert wait_for(finished) == [("success", "analytics")]
