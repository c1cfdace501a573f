"""The Celery application: configuration from the settings, tasks from ``tasks/``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from celery import Celery, signals
from kombu.utils.imports import symbol_by_name

import beat_schedule
from worker import signals as worker_signals
from worker.ledger.outbox import install as install_outbox
from worker.liveness import Lease, transport_options
from worker.publishing import install_session_hooks
from worker.queues import (
    DEFAULT_QUEUE,
    PRIORITY_SEP,
    PRIORITY_STEPS,
    FamilyLimits,
    celery_queues,
    route_task,
)
from worker.settings import Settings, SettingsError, get_settings

# Task modules, listed rather than discovered: what a worker runs is visible here.
TASK_MODULES = [
    "tasks.analysis.tasks",
    "tasks.automation.tasks",
    "tasks.enrichment.tasks",
    "tasks.ingest.tasks",
    "tasks.listening.tasks",
    "tasks.monitoring.tasks",
    "tasks.playlists.tasks",
    "tasks.trending.tasks",
    "tasks.workflows.tasks",
    "worker.ledger.tasks",
    "worker.recovery.tasks",
]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Production settings; a comment says why wherever a line is not self-evident."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        **(amqp_broker(settings) if settings.broker_is_amqp else redis_broker(settings)),
        # Results in Redis, for senders that wait (`automation trigger --wait`, Flower,
        # another service's AsyncResult.get()), kept a day; the durable record is task_runs.
        # Nothing on the task path needs PostgreSQL: a database outage delays work that
        # uses the database and nothing else. Arguments are not stored with results
        # (Flower shows them from events, truncated). Celery's Redis backend, except that
        # a run's result is written with its journal entry (worker/result_backend.py).
        "result_backend": f"worker.result_backend:RunResultBackend+{settings.redis_url}",
        "result_extended": False,
        "result_expires": dt.timedelta(seconds=settings.result_expires_seconds),
        # JSON only: a pickle message is refused (and kept as a dead letter).
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": settings.timezone,
        "enable_utc": True,
        # At-least-once: ack after the task, requeue if its worker dies. Every task is
        # idempotent, and redeliveries are capped (AutomationTask, MAX_DELIVERIES).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A worker holds only the message it is running; long tasks never sit on short ones.
        "worker_prefetch_multiplier": 1,
        "worker_max_memory_per_child": settings.worker_max_memory_per_child_mb * 1024,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        # Soft shutdown gives running tasks time to finish and requeues the rest.
        "worker_soft_shutdown_timeout": 30.0,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_consumer": "worker.consumer:RecordingConsumer",
        "task_queues": celery_queues(amqp=settings.broker_is_amqp),
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": (route_task,),
        "task_annotations": (FamilyLimits(),),
        # No STARTED state in the result backend: a round trip per task for a state that
        # task_runs and Flower's task-started event already show.
        "task_track_started": False,
        # Task events cost three publishes a task (about a fifth of a worker's time on a
        # no-op), so workers send them while someone watches: Flower switches them on
        # when it starts (enable_events) and keeps them on. Their queues expire when
        # nobody listens, so they never pile up.
        "worker_send_task_events": False,
        # A sent event is a second publish on every send (two fifths of a send's cost),
        # made whether or not anyone listens, and nothing can switch it on remotely.
        # Flower shows a task from the worker's received event on, arguments included;
        # what waits in a queue is in `automation status`.
        "task_send_sent_event": False,
        "event_queue_expires": 60,
        "event_queue_ttl": 5,
        # The code's default schedule; beat fires the live one in PostgreSQL, which these
        # are reconciled into at start (worker/schedules/). Named here, not on a command
        # line, so `celery -A worker beat` by hand is the beat compose and `automation up`
        # run, and any number of them may run: one leads, fenced.
        "beat_schedule": beat_schedule.SCHEDULE,
        "beat_scheduler": "worker.schedules.scheduler:DatabaseScheduler",
        # Beat sleeps until its next slot, its next lease renewal or its next re-read of
        # the entries, whichever is first; this only caps it.
        "beat_max_loop_interval": 5,
    }


def redis_broker(settings: Settings) -> dict[str, Any]:
    """Redis as the broker (the default)."""
    return {
        # kombu's Redis transport, but a malformed envelope becomes a dead letter instead
        # of stopping the worker or vanishing (worker/transport.py).
        "broker_transport": "worker.transport:Transport",
        "broker_transport_options": {
            # A dead worker's messages go back to their queues one lease after its last
            # renewal; a live worker's never do, however long it holds them
            # (worker/liveness.py).
            **transport_options(settings.worker_lease_seconds),
            # Message priorities within a queue (the ledger's urgent work goes first).
            "priority_steps": PRIORITY_STEPS,
            "sep": PRIORITY_SEP,
        },
    }


def amqp_broker(settings: Settings) -> dict[str, Any]:
    """RabbitMQ as the broker: quorum queues (``worker.queues.celery_queues``), which hand a
    consumer's unacknowledged messages back when its connection closes, so no lease, no
    visibility timeout and no custom transport: AMQP frames are well-formed by protocol,
    and a malformed body or header is the consumer's to dead-letter (worker/consumer.py)."""
    return {
        # A publish counts once RabbitMQ has it (on the quorum's majority): a send that
        # returned is never lost to a connection drop in the same instant.
        "broker_transport_options": {"confirm_publish": True},
        # A host that vanishes without closing its connection (power, network) is
        # noticed after missed heartbeats: its messages come back within about a lease.
        "broker_heartbeat": settings.worker_lease_seconds,
    }


# Every table that fires work through NOTIFY and an outbox (``worker.ledger.outbox``),
# named like the task modules: resolved when a worker starts, so importing the app never
# imports a domain's code for it.
OUTBOX_SOURCES = [
    "worker.ledger.enqueue:LEDGER_SOURCE",
    "tasks.enrichment.scheduling:UPLOADS_SOURCE",
    "tasks.workflows.matching:CHANGES_SOURCE",
    "tasks.ingest.dispatch:INGEST_SOURCE",
]


# Machinery only a worker process runs beside its consumer, named like the outbox sources
# and resolved when a ``celery worker`` process starts (celeryd_init, before worker_ready),
# so the CLI, beat and the console never import it (the watcher brings watchfiles and the
# media libraries: over a second of start-up for every `automation` command).
WORKER_HOOKS = ["tasks.ingest.watcher:install"]


def install_worker_hooks(app: Celery, names: list[str]) -> None:
    def load(**_: Any) -> None:
        for name in names:
            symbol_by_name(name)(app)

    # Strong reference: the handler is a closure, which a weak one would lose at once.
    signals.celeryd_init.connect(load, weak=False)


def create_app(settings: Settings) -> Celery:
    """The app, with everything it relies on installed here rather than on import: the
    session hooks that publish after commit, the signal handlers, the outbox dispatcher and
    the ingest watcher."""
    install_session_hooks()
    worker_signals.install()
    app = Celery("automation", task_cls="worker.base_task:AutomationTask")
    app.config_from_object(celery_config(settings))
    app.conf.include = TASK_MODULES
    app.steps["consumer"].add(Lease)
    install_outbox(app, OUTBOX_SOURCES)
    install_worker_hooks(app, WORKER_HOOKS)
    return app


try:
    app = create_app(get_settings())
except SettingsError as exc:
    # `celery -A worker ...` and `automation ...` both land here: one line, no traceback.
    raise SystemExit(str(exc)) from None

# Register every task now, not only when a worker starts: the CLI, beat's schedule check
# and `automation.trigger` all need the full list of public names.
app.loader.import_default_modules()
