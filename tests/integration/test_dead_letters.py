"""Messages no task can take are kept whole in dead_letters, never silently dropped."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from db.models import DeadLetter, TaskRun
from tests.support import wait_for


def dead_letters(session: Any) -> list[DeadLetter]:
    session.expire_all()
    return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def test_an_unknown_task_name_is_kept_as_a_dead_letter(
    app: Any, celery_worker: Any, session: Any
) -> None:
    result = app.send_task("no.such.task", kwargs={"x": 1}, queue="default")

    [letter] = wait_for(lambda: dead_letters(session))
    assert letter.task_name == "no.such.task"
    assert letter.task_id == result.id
    assert letter.reason == "unknown task name 'no.such.task': no task of that name is registered"
    assert letter.queue == "default"
    assert '"x": 1' in (letter.body or "")


def test_a_pickled_message_is_refused_and_kept_as_a_dead_letter(
    app: Any, celery_worker: Any, session: Any
) -> None:
    task_id = str(uuid.uuid4())
    app.send_task("automation.status", task_id=task_id, queue="default", serializer="pickle")

    [letter] = wait_for(lambda: dead_letters(session))
    assert letter.task_id == task_id
    assert letter.content_type == "application/x-python-serialize"
    assert "ContentDisallowed" in letter.reason
    assert (letter.body or "").startswith("base64:")
    session.expire_all()
    assert session.scalars(select(TaskRun).where(TaskRun.task_id == task_id)).all() == []


def test_a_message_without_a_task_name_is_kept_as_a_dead_letter(
    app: Any, celery_worker: Any, session: Any
) -> None:
    default = app.amqp.queues["default"]
    with app.producer_or_acquire() as producer:
        producer.publish(
            {"hello": "world"},
            exchange=default.exchange,
            routing_key=default.routing_key,
            serializer="json",
        )

    [letter] = wait_for(lambda: dead_letters(session))
    assert letter.reason == "not a task message (no task name in its headers or body)"
    assert letter.body == '{"hello": "world"}'
