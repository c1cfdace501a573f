"""Every execution of every task lands in task_runs, and recording never costs the task."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from db.models import TaskRun
from tests.support import wait_for


def an_hour_ago() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)


def runs_of(session: Any, task_id: str) -> list[TaskRun]:
    session.expire_all()
    return list(
        session.scalars(select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.id))
    )


def test_a_successful_run_is_recorded_with_its_timing_and_worker(
    app: Any, celery_worker: Any, session: Any
) -> None:
    result = app.send_task("automation.status")
    result.get(timeout=30)

    [run] = wait_for(lambda: [r for r in runs_of(session, result.id) if r.finished_at])
    assert run.task_name == "automation.status"
    assert run.status == "success"
    assert run.queue == "default"
    assert run.delivery == 1
    assert run.worker_host and socket.gethostname() in run.worker_host
    assert run.runtime_seconds is not None and run.runtime_seconds >= 0
    assert run.finished_at >= run.started_at
    assert (run.result_summary or "").startswith('{"background_tasks": ')


def test_a_failed_run_is_recorded_with_its_error_and_not_retried(
    app: Any, celery_worker: Any, session: Any
) -> None:
    result = app.send_task("automation.trigger", kwargs={"task": "no_such_thing"})
    with pytest.raises(Exception, match="unknown task 'no_such_thing'"):
        result.get(timeout=30)

    [run] = wait_for(lambda: [r for r in runs_of(session, result.id) if r.finished_at])
    assert run.status == "failure"
    assert "UnknownTriggerError" in (run.error or "")
    assert "valid: all, " in (run.error or "")
    assert run.args_summary == '{"args": [], "kwargs": {"task": "no_such_thing"}}'


def test_the_task_still_runs_when_its_run_cannot_be_recorded(
    app: Any, celery_worker: Any, engine: Any
) -> None:
    # automation.trigger touches no table itself, so only the recording can fail here.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE task_runs RENAME TO task_runs_away"))
    try:
        outcome = app.send_task("automation.trigger", kwargs={"task": "status"}).get(timeout=30)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE task_runs_away RENAME TO task_runs"))
    assert [sent["task"] for sent in outcome["triggered"]] == ["automation.status"]


def test_a_message_that_keeps_killing_its_worker_is_refused_after_the_cap(
    app: Any, celery_worker: Any, session: Any, engine: Any
) -> None:
    # Three earlier deliveries of this message started and never finished: each time
    # the worker died and Redis handed the message back (MAX_DELIVERIES defaults to 3).
    task_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            insert(TaskRun),
            [
                {
                    "task_id": task_id,
                    "task_name": "automation.status",
                    "status": "started",
                    "started_at": an_hour_ago(),
                }
                for _ in range(3)
            ],
        )

    result = app.send_task("automation.status", task_id=task_id)
    with pytest.raises(Exception, match="delivered 4 times"):
        result.get(timeout=30)

    runs = wait_for(
        lambda: [r for r in runs_of(session, task_id) if r.delivery == 4 and r.finished_at]
    )
    assert runs[0].status == "refused"
    assert [r.status for r in runs_of(session, task_id)][:3] == ["lost", "lost", "lost"]


def test_a_redelivered_message_marks_the_unfinished_run_lost_and_runs(
    app: Any, celery_worker: Any, session: Any, engine: Any
) -> None:
    task_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            insert(TaskRun).values(
                task_id=task_id,
                task_name="automation.status",
                status="started",
                started_at=an_hour_ago(),
            )
        )

    app.send_task("automation.status", task_id=task_id).get(timeout=30)

    runs = wait_for(
        lambda: (
            [r for r in runs_of(session, task_id) if r.status == "success"]
            and runs_of(session, task_id)
        )
    )
    assert [(r.status, r.delivery) for r in runs] == [("lost", 1), ("success", 2)]
