"""Celery signal handlers: the run journal, log context, start-up checks, fork safety.

Connected by ``install()``, which ``worker.celery_app.create_app`` calls.

A run's start and end are appended to the run journal (``worker.run_journal``) in Redis,
the store the message itself came from; nothing here needs PostgreSQL. Recording never
breaks the task: if Redis cannot take an entry either, the entry is written to
PostgreSQL directly, and if that fails too the loss is logged at error level.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, signals
from celery._state import get_current_task
from celery.exceptions import Ignore, TimeLimitExceeded, WorkerLostError
from celery.utils.log import get_logger

from db.migrate import SchemaBehindError, ensure_current
from db.session import drainer_engine, get_engine, reset_after_fork
from worker import run_journal
from worker.queues import arrival_queue
from worker.redis_client import get_redis
from worker.run_journal import RunStart, describe_error, summarize, utcnow
from worker.schedules.store import defaults_from
from worker.schedules.timing import ScheduleError
from worker.settings import get_settings

log = get_logger(__name__)

# What Celery's Task.replace raises: the task goes on as the signature that replaced it.
REPLACED = "Replaced by new task"

# Celery states -> task_runs.status. None: the body was stopped from outside (the worker
# cancelled it when the broker connection was lost, or a shutdown terminated it); the
# message was not acknowledged and comes back.
_STATUS = {
    "SUCCESS": "success",
    "FAILURE": "failure",
    "RETRY": "retry",
    "IGNORED": "ignored",
    "REJECTED": "ignored",
    "REVOKED": "revoked",
    None: "cut_off",
}


def _run_of(request: Any, task_id: str, task_name: str, args: Any, kwargs: Any) -> RunStart:
    """What the journal records of a run, from Celery's request (any field may be unset)."""
    return RunStart(
        run_key=run_journal.new_run_key(),
        task_id=str(task_id),
        task_name=task_name,
        retries=int(getattr(request, "retries", 0) or 0),
        args_summary=summarize({"args": list(args or ()), "kwargs": dict(kwargs or {})}),
        queue=arrival_queue(getattr(request, "delivery_info", None)),
        # The inbox's forward adds this header; Celery exposes headers on the request.
        forwarded_from=getattr(request, "forwarded_from", None),
        worker_host=getattr(request, "hostname", None),
        started_at=utcnow(),
    )


def _record_start(task_id: str, task: Any, args: Any, kwargs: Any, **_: Any) -> None:
    request = task.request
    run = _run_of(request, task_id, task.name, args, kwargs)
    request.run = run
    request.run_clock = time.monotonic()
    request.delivery = 1
    try:
        if (getattr(request, "delivery_info", None) or {}).get("redelivered"):
            # Handed back by the broker (its worker died, or it was rejected): whether it
            # may run again depends on how many deliveries came before, so wait for it.
            request.delivery = run_journal.journal().start(run)
        else:
            # Never delivered before, so delivery 1: the start is sent and the body runs
            # at once; the answer is read with the finish.
            request.started_on = run_journal.journal().start_unconfirmed(run)
    except Exception:
        log.warning("run journal unavailable for the start of %s[%s]", task.name, task_id)
        run_journal.record("start", run.fields(), delivery=1)


def _record_finish(task_id: str, task: Any, retval: Any, state: str | None, **_: Any) -> None:
    request = task.request
    run: RunStart | None = getattr(request, "run", None)
    if run is None:
        return
    status = getattr(request, "run_outcome", None) or _STATUS.get(state, str(state).lower())
    if isinstance(retval, Ignore) and retval.args == (REPLACED,):
        # Replaced by other tasks (a chord's fan-out): its fan-in finishes under this
        # run's task id, so a later success with the same id means the whole fan-out did.
        status = "fanned_out"
    # Ignore (replaced by a chord) is Celery's control flow, not a failure.
    failed = isinstance(retval, BaseException) and not isinstance(retval, Ignore)
    fields = {
        "delivery": request.delivery,
        "status": status,
        "finished_at": utcnow().isoformat(),
        "runtime_seconds": time.monotonic() - request.run_clock,
        "result_summary": None if failed or retval is None else summarize(retval),
        "error": describe_error(retval) if failed else None,
    }
    if state is None:
        fields["error"] = "cut off: stopped from outside before it finished (connection lost)"
    # Celery's result for this run, held back by worker.result_backend to go with the finish.
    result = getattr(request, "pending_result", None)
    try:
        run_journal.journal().finish(
            run, fields, result=result, started_on=getattr(request, "started_on", None)
        )
    except Exception:
        log.warning(
            "run journal unavailable for the end of %s[%s]%s",
            task.name,
            task_id,
            "; its result is not stored" if result is not None else "",
        )
        run_journal.record("finish", {**run.fields(), **fields}, delivery=fields["delivery"])


def _record_revoked(request: Any, terminated: bool, expired: bool, **_: Any) -> None:
    # Revoked or expired before it ran: no child ever saw it, so no start was recorded.
    # (A running task that is terminated ends through its own run, as cut off.)
    if terminated or request is None:
        return
    run = _run_of(
        request,
        request.id,
        str(getattr(request, "task", None) or "unknown"),
        request.args,
        request.kwargs,
    )
    now = run.started_at
    reason = "expired before it ran" if expired else "revoked before it ran"
    run_journal.record(
        "finish",
        {**run.fields(), "status": "revoked", "finished_at": now.isoformat(), "error": reason},
    )


def _record_killed(task_id: str, exception: BaseException, sender: Any, **_: Any) -> None:
    # A child killed for its hard time limit never reaches postrun; the parent reports it.
    # (A child that died otherwise is requeued: its next delivery marks the run lost.)
    if not isinstance(exception, TimeLimitExceeded | WorkerLostError):
        return
    run_journal.record(
        "killed",
        {
            "task_id": task_id,
            "error": describe_error(exception),
            "finished_at": utcnow().isoformat(),
        },
    )


# The worker main process's drainer (signals give no other place to keep it).
_drainers: dict[str, run_journal.Drainer] = {}


def _start_drainer(**_: Any) -> None:
    if "drainer" not in _drainers:
        drainer = run_journal.Drainer(drainer_engine(), get_redis())
        drainer.start()
        _drainers["drainer"] = drainer


def _stop_drainer(**_: Any) -> None:
    drainer = _drainers.pop("drainer", None)
    if drainer is not None:
        drainer.stop()
        drainer.join(timeout=10)


def _fresh_connections_in_child(**_: Any) -> None:
    reset_after_fork()


def validate_schedule(app: Celery) -> None:
    """Raise ValueError naming every default schedule entry whose task is not registered,
    or whose timing or missed-run policy cannot be used."""
    try:
        defaults = defaults_from(app.conf.beat_schedule, get_settings().timezone)
    except ScheduleError as exc:
        raise ValueError(f"beat_schedule: {exc}") from None
    unknown = sorted(
        f"{key} -> {entry.task}" for key, entry in defaults.items() if entry.task not in app.tasks
    )
    if unknown:
        raise ValueError("beat_schedule names unregistered tasks: " + ", ".join(unknown))


def _preflight(app: Celery, *, check_schedule: bool) -> None:
    """Refuse to start against an old schema or with a schedule naming unknown tasks."""
    try:
        ensure_current(get_engine())
        if check_schedule:
            validate_schedule(app)
    except (SchemaBehindError, ValueError) as exc:
        raise SystemExit(f"refusing to start: {exc}") from None


def _worker_preflight(sender: Any, **_: Any) -> None:
    _preflight(sender.app, check_schedule=False)


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


def _log_with_task_context(logger: logging.Logger, **_: Any) -> None:
    for handler in logger.handlers:
        handler.setFormatter(_ContextFormatter(LOG_FORMAT))


# (signal, handler): every handler this module has, connected by ``install``.
_HANDLERS = [
    (signals.task_prerun, _record_start),
    (signals.task_postrun, _record_finish),
    (signals.task_revoked, _record_revoked),
    (signals.task_failure, _record_killed),
    (signals.worker_ready, _start_drainer),
    (signals.worker_shutdown, _stop_drainer),
    (signals.worker_process_init, _fresh_connections_in_child),
    (signals.worker_init, _worker_preflight),
    (signals.beat_init, _beat_preflight),
    (signals.after_setup_logger, _log_with_task_context),
    (signals.after_setup_task_logger, _log_with_task_context),
]


def install() -> None:
    """Connect the handlers. Called where the app is built (not on import); idempotent."""
    for signal, handler in _HANDLERS:
        signal.connect(handler, dispatch_uid=f"{__name__}.{handler.__name__}")
