"""By-name senders that know nothing of our routing still get their task run at home."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db.models import TaskRun
from tests.support import wait_for


def test_a_task_sent_to_celerys_default_queue_is_forwarded_home_and_runs_there(
    app: Any, celery_worker: Any, session: Any
) -> None:
    # What a bare send_task from another service (or celery-node) does: queue 'celery'.
    result = app.send_task("automation.status", queue="celery")

    report = result.get(timeout=30)

    assert "generated_at" in report

    def runs() -> list[tuple[str, str | None, str | None, str | None]]:
        session.expire_all()
        return [
            (r.status, r.queue, r.forwarded_from, r.error)
            for r in session.scalars(
                select(TaskRun).where(TaskRun.task_id == result.id).order_by(TaskRun.id)
            )
            if r.finished_at
        ]

    # The hop through the inbox is a republish, not a run: one run, at home.
    assert wait_for(runs) == [("success", "default", "celery", None)]


def test_ping_sent_by_name_to_the_inbox_answers_from_a_default_worker(
    app: Any, celery_worker: Any
) -> None:
    # The health check another service sends, knowing nothing of our queues.
    answer = app.send_task("automation.ping", queue="celery").get(timeout=30)

    assert answer["worker"] and answer["worker"] in celery_worker.hostname
    assert answer["time"].endswith("+00:00")
