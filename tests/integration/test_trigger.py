"""Enqueue by name: public names, short names and `all`; a bad name lists the good ones."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from db.models import TaskRun
from tests.support import wait_for
from worker.cli import main


def test_the_trigger_task_enqueues_the_named_task_which_then_runs(
    app: Any, celery_worker: Any, session: Any
) -> None:
    outcome = app.send_task("automation.trigger", kwargs={"task": "status"}).get(timeout=30)

    [sent] = outcome["triggered"]
    assert sent["task"] == "automation.status"
    assert app.AsyncResult(sent["task_id"]).get(timeout=30)["generated_at"]

    def runs() -> list[str]:
        session.expire_all()
        return list(
            session.scalars(select(TaskRun.status).where(TaskRun.task_id == sent["task_id"]))
        )

    assert wait_for(lambda: runs() == ["success"])


def test_the_trigger_command_waits_and_prints_the_result(celery_worker: Any) -> None:
    outcome = CliRunner().invoke(main, ["trigger", "status", "--wait", "--timeout", "30"])

    assert outcome.exit_code == 0, outcome.output
    assert "sent automation.status [" in outcome.output
    assert "automation.status -> {" in outcome.output
