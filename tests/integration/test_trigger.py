"""Enqueue by name: public names, short names and `all`; a bad name lists the good ones."""

from __future__ import annotations

from typing import Any

import pytest
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


def test_trigger_all_runs_aggregation_trending_and_playlists_in_order_and_reports_each(
    app: Any, celery_worker: Any, session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule = {
        name: {"task": name, "cron": "0 3 * * *", "missed": "run_once"}
        for name in (
            "playlists.generate_all",
            "automation.status",
            "trending.calculate",
            "listening.aggregate",
        )
    }
    monkeypatch.setitem(app.conf, "beat_schedule", schedule)

    outcome = CliRunner().invoke(main, ["trigger", "all", "--timeout", "90"])

    assert outcome.exit_code == 0, outcome.output
    sent = [line.split()[1] for line in outcome.output.splitlines() if line.startswith("sent ")]
    assert sent == [
        "listening.aggregate",
        "trending.calculate",
        "playlists.generate_all",
        "automation.status",
    ]
    for task in sent:
        assert f"{task} -> " in outcome.output  # each result reported

    def runs() -> dict[str, TaskRun]:
        session.expire_all()
        found = {}
        for run in session.scalars(select(TaskRun).order_by(TaskRun.started_at)):
            found.setdefault(run.task_name, run)
        return found if {"listening.aggregate", "playlists.generate_all"} <= set(found) else {}

    first = wait_for(runs)
    aggregate, trending = first["listening.aggregate"], first["trending.calculate"]
    assert aggregate.finished_at is not None and aggregate.finished_at <= trending.started_at
    assert trending.finished_at is not None
    assert trending.finished_at <= first["playlists.generate_all"].started_at
