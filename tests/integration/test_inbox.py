"""By-name senders that know nothing of our routing still get their task run at home."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db.models import TaskRun
from tests.support import wait_for, worker_process


def finished_runs(session: Any, task_id: str) -> list[tuple[str, str | None, str | None]]:
    session.expire_all()
    return [
        (r.status, r.queue, r.forwarded_from)
        for r in session.scalars(
            select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.id)
        )
        if r.finished_at
    ]


def test_a_task_sent_to_the_inbox_runs_on_the_worker_that_took_it_if_that_serves_its_home(
    app: Any, celery_worker: Any, session: Any
) -> None:
    # What a bare send_task from another service (or celery-node) does: queue 'celery'.
    # The test worker also consumes 'default', automation.status's home: no hop needed.
    result = app.send_task("automation.status", queue="celery")

    report = result.get(timeout=30)

    assert "generated_at" in report
    assert wait_for(lambda: finished_runs(session, result.id)) == [("success", "celery", None)]


def test_a_task_sent_to_the_inbox_is_forwarded_home_when_the_worker_does_not_serve_it(
    app: Any, celery_worker: Any, session: Any
) -> None:
    # The test worker does not consume 'enrichment', enrichment.progress's home queue: it
    # republishes the message there (a hop, not a run), and an enrichment worker runs it.
    result = app.send_task("enrichment.progress", queue="celery")
    with worker_process(app, "enrichment"):
        progress = result.get(timeout=60)

    assert "total" in progress
    assert wait_for(lambda: finished_runs(session, result.id)) == [
        ("success", "enrichment", "celery")
    ]


def test_ping_sent_by_name_to_the_inbox_answers_from_a_default_worker(
    app: Any, celery_worker: Any
) -> None:
    # The health check another service sends, knowing nothing of our queues.
    answer = app.send_task("automation.ping", queue="celery").get(timeout=30)

    assert answer["worker"] and answer["worker"] in celery_worker.hostname
    assert answer["time"].endswith("+00:00")
