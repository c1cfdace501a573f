"""Celery signal handlers: run history, log context, start-up checks, fork safety.

Recording never breaks the task: every handler swallows and logs its own failure, so a
database outage costs us history rows, never the work itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from celery import Celery, signals
from celery._state import get_current_task
from celery.exceptions import Ignore, TimeLimitExceeded, WorkerLostError
from celery.utils.log import get_logger

from db.migrate import SchemaBehindError, ensure_current
from db.session import get_engine, reset_after_fork
from worker import run_history

log = get_logger(__name__)

# Celery states -> task_runs.status
_STATUS = {
    "SUCCESS": "success",
    "FAILURE": "failure",
    "RETRY": "retry",
    "IGNORED": "ignored",
    "REJECTED": "ignored",
    "REVOKED": "revoked",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@signals.task_prerun.connect
def _record_start(task_id: str, task: Any, args: Any, kwargs: Any, **_: Any) -> None:
    request = task.request
    try:
        run_id, delivery = run_history.record_start(
            get_engine(),
            task_id=task_id,
            task_name=task.name,
            args=args,
            kwargs=kwargs,
            queue=(request.delivery_info or {}).get("routing_key"),
            worker_host=request.hostname,
            now=utcnow(),
        )
    except Exception:
        log.warning("could not record the start of %s[%s]", task.name, task_id, exc_info=True)
        return
    request.run_id = run_id
    request.delivery = delivery
    request.run_clock = time.monotonic()


@signals.task_postrun.connect
def _record_finish(task_id: str, task: Any, retval: Any, state: str, **_: Any) -> None:
    request = task.request
    run_id = getattr(request, "run_id", None)
    if run_id is None:
        return
    status = getattr(request, "run_outcome", None) or _STATUS.get(state, state.lower())
    # Ignore (forwarded, replaced by a chord) is Celery's control flow, not a failure.
    failed = isinstance(retval, BaseException) and not isinstance(retval, Ignore)
    try:
        run_history.record_finish(
            get_engine(),
            run_id,
            status=status,
            now=utcnow(),
            runtime_seconds=time.monotonic() - request.run_clock,
            result=None if failed else retval,
            error=run_history.describe_error(retval) if failed else None,
        )
    except Exception:
        log.warning("could not record the end of %s[%s]", task.name, task_id, exc_info=True)


@signals.task_failure.connect
def _record_killed(task_id: str, exception: BaseException, sender: Any, **_: Any) -> None:
    # A child killed for its hard time limit never reaches postrun; the parent reports it.
    if not isinstance(exception, TimeLimitExceeded | WorkerLostError):
        return
    try:
        run_history.record_killed(
            get_engine(), task_id, error=run_history.describe_error(exception), now=utcnow()
        )
    except Exception:
        log.warning("could not record the kill of %s[%s]", sender.name, task_id, exc_info=True)


@signals.worker_process_init.connect
def _fresh_connections_in_child(**_: Any) -> None:
    reset_after_fork()


def _preflight(app: Celery, *, check_schedule: bool) -> None:
    """Refuse to start against an old schema or with a schedule naming unknown tasks."""
    try:
        ensure_current(get_engine())
        if check_schedule:
            from worker.celery_app import validate_schedule

            validate_schedule(app)
    except (SchemaBehindError, ValueError) as exc:
        raise SystemExit(f"refusing to start: {exc}") from None


@signals.worker_init.connect
def _worker_preflight(sender: Any, **_: Any) -> None:
    _preflight(sender.app, check_schedule=False)


@signals.beat_init.connect
def _beat_preflight(sender: Any, **_: Any) -> None:
    _preflight(sender.app, check_schedule=True)


class _ContextFormatter(logging.Formatter):
    """Adds ``task_name[task_id]`` to every line logged while a task runs, from any logger."""

    def format(self, record: logging.LogRecord) -> str:
        task = get_current_task()
        record.task_context = (
            f" {task.name}[{task.request.id}]" if task is not None and task.request.id else ""
        )
        return super().format(record)


LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s]%(task_context)s %(name)s: %(message)s"


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _log_with_task_context(logger: logging.Logger, **_: Any) -> None:
    for handler in logger.handlers:
        handler.setFormatter(_ContextFormatter(LOG_FORMAT))
