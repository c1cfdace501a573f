"""Writes ``task_runs`` (one row per execution) and ``dead_letters`` (messages no task took).

Each write is its own short transaction on its own connection, apart from the task's
session: a task that rolls back still leaves its run recorded, and a failure here is the
caller's to swallow (see ``worker.signals``).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, func, insert, update

from db.models import DeadLetter, TaskRun

SUMMARY_LIMIT = 500  # characters kept of arguments, results and errors
BODY_LIMIT = 256 * 1024  # a dead letter keeps its body whole up to this


def truncate(text: str, limit: int = SUMMARY_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(value: Any, limit: int = SUMMARY_LIMIT) -> str:
    """A JSON rendering of ``value``, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, default=repr, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return truncate(text, limit)


def describe_error(exc: BaseException) -> str:
    return truncate(f"{type(exc).__name__}: {exc}")


def record_start(
    engine: Engine,
    *,
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    queue: str | None,
    worker_host: str | None,
    now: dt.datetime,
) -> tuple[int, int]:
    """Insert the run; return (run id, delivery number of this message).

    Earlier runs of the same message still marked ``started`` never finished: their worker
    died and the broker handed the message back. They become ``lost``, and count towards
    the delivery number. Retries are new messages with the same id but they finished
    (status ``retry``), so they do not count.
    """
    with engine.begin() as conn:
        lost = conn.execute(
            update(TaskRun)
            .where(TaskRun.task_id == task_id, TaskRun.status.in_(("started", "lost")))
            .values(status="lost", error=func.coalesce(TaskRun.error, "worker lost"))
            .returning(TaskRun.id)
        ).all()
        delivery = len(lost) + 1
        run_id = conn.execute(
            insert(TaskRun)
            .values(
                task_id=task_id,
                task_name=task_name,
                args_summary=summarize({"args": list(args or ()), "kwargs": dict(kwargs or {})}),
                status="started",
                queue=queue,
                delivery=delivery,
                started_at=now,
                worker_host=worker_host,
            )
            .returning(TaskRun.id)
        ).scalar_one()
    return run_id, delivery


def record_finish(
    engine: Engine,
    run_id: int,
    *,
    status: str,
    now: dt.datetime,
    runtime_seconds: float | None,
    result: Any = None,
    error: str | None = None,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(TaskRun)
            .where(TaskRun.id == run_id)
            .values(
                status=status,
                finished_at=now,
                runtime_seconds=runtime_seconds,
                result_summary=None if result is None else summarize(result),
                error=error,
            )
        )


def record_killed(engine: Engine, task_id: str, *, error: str, now: dt.datetime) -> None:
    """The worker's parent reports a child it killed (hard time limit): close its run."""
    with engine.begin() as conn:
        conn.execute(
            update(TaskRun)
            .where(TaskRun.task_id == task_id, TaskRun.status == "started")
            .values(
                status="failure",
                finished_at=now,
                runtime_seconds=func.extract("epoch", now - TaskRun.started_at),
                error=error,
            )
        )


def _body_text(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, str):
        return body[:BODY_LIMIT]
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)[:BODY_LIMIT]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    return summarize(body, BODY_LIMIT)


def record_dead_letter(
    engine: Engine,
    *,
    reason: str,
    headers: Mapping[str, Any] | None,
    body: Any,
    content_type: str | None,
    queue: str | None,
    worker_host: str | None,
) -> int:
    """Keep a message no task could take, whole, for an operator to read or replay."""
    headers = dict(headers or {})
    safe_headers = json.loads(json.dumps(headers, default=repr))
    with engine.begin() as conn:
        return conn.execute(
            insert(DeadLetter)
            .values(
                reason=truncate(reason, 2000),
                task_id=_str_or_none(headers.get("id")),
                task_name=_str_or_none(headers.get("task")),
                queue=queue,
                content_type=content_type,
                headers=safe_headers,
                body=_body_text(body),
                worker_host=worker_host,
            )
            .returning(DeadLetter.id)
        ).scalar_one()


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
