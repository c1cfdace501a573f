"""What the operators' tasks report and do: triggers by name, and the status report.

``collect_status`` is the report behind both ``automation status`` (read straight from
PostgreSQL, so it works with every worker down) and the ``automation.status`` task.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import kombu.exceptions
import redis
from celery import Celery, chain
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import (
    BackgroundTask,
    BrokerReset,
    DeadLetter,
    SmartPlaylist,
    TaskRun,
    TrendingTrack,
)
from db.queries import queries
from tasks.enrichment.monitoring import enrichment_progress, spotify_pause
from tasks.ingest import control as ingest_control
from tasks.workflows.monitoring import summary as workflows_summary
from worker import liveness
from worker.errors import PermanentError
from worker.ledger import limit_params
from worker.queues import PRIORITY_STEPS, all_queue_names, redis_keys
from worker.run_journal import pending_entries
from worker.schedules.store import schedule_view
from worker.settings import get_settings

# Short names for the spec's manual triggers. A name is offered only once every task it
# stands for is registered.
TRIGGER_ALIASES: dict[str, tuple[str, ...]] = {
    "listening_stats": ("listening.aggregate",),
    "trending": ("trending.calculate",),
    "smart_playlists": ("playlists.generate_all",),
    "cleanup": (
        "cleanup.background_tasks",
        "cleanup.expired_playlists",
        "cleanup.stuck_tasks",
        "cleanup.task_runs",
    ),
    "enrichment": ("enrichment.enrich_pending",),
    "status": ("automation.status",),
    "ping": ("automation.ping",),
}
NOT_TRIGGERABLE = {"automation.trigger"}
# `trigger all` runs these one after the other, each once the one before has finished:
# the day's aggregation writes the rollups playlists read, and trending (which reads
# play_history alone, so it waits for nothing) fills the cold-start mixes. The rest of the
# scheduled tasks depend on none of them and go together, after them.
DEPENDENCY_ORDER = ("listening.aggregate", "trending.calculate", "playlists.generate_all")


def _rank(task: str) -> int:
    return DEPENDENCY_ORDER.index(task) if task in DEPENDENCY_ORDER else len(DEPENDENCY_ORDER)


def ordered_stages(names: list[str]) -> tuple[list[str], list[str]]:
    """``names`` split into the tasks that run in sequence, in order, and the rest."""
    return [n for n in names if n in DEPENDENCY_ORDER], [
        n for n in names if n not in DEPENDENCY_ORDER
    ]


LEDGER = queries("worker.ledger", "ledger")
QUORUM_QUEUES = "RabbitMQ quorum queues"


class UnknownTriggerError(PermanentError):
    pass


def public_task_names(celery_app: Celery) -> list[str]:
    return sorted(name for name in celery_app.tasks if not name.startswith("celery."))


def valid_triggers(celery_app: Celery) -> list[str]:
    registered = set(public_task_names(celery_app)) - NOT_TRIGGERABLE
    aliases = [a for a, names in TRIGGER_ALIASES.items() if set(names) <= registered]
    return ["all", *sorted(aliases), *sorted(registered)]


def resolve_trigger(celery_app: Celery, name: str) -> list[str]:
    """The task names ``name`` stands for; ``all`` is every task of the code's default
    schedule, in dependency order (``DEPENDENCY_ORDER`` first, then the rest by name)."""
    if name == "all":
        names = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
        return sorted(names, key=lambda task: (_rank(task), task))
    if name in valid_triggers(celery_app):
        return list(TRIGGER_ALIASES.get(name, (name,)))
    raise UnknownTriggerError(
        f"unknown task {name!r}; valid: {', '.join(valid_triggers(celery_app))}"
    )


def send_trigger(
    celery_app: Celery, name: str, kwargs: dict[str, Any] | None = None
) -> list[dict[str, str]]:
    """Enqueue what ``name`` stands for; each task sent, with its id.

    For ``all``, the tasks of ``DEPENDENCY_ORDER`` go as a chain, each starting once the
    one before has succeeded, and the rest go at once.
    """
    names = resolve_trigger(celery_app, name)
    in_order, rest = ordered_stages(names) if name == "all" else ([], names)
    sent = []
    if in_order:
        last = chain(
            *(celery_app.signature(n, kwargs=kwargs or {}, immutable=True) for n in in_order)
        ).apply_async()
        ids = []
        while last is not None:
            ids.append(last.id)
            last = last.parent
        sent += [{"task": n, "task_id": i} for n, i in zip(in_order, reversed(ids), strict=True)]
    sent += [{"task": n, "task_id": celery_app.send_task(n, kwargs=kwargs or {}).id} for n in rest]
    return sent


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _counts(session: Session, column: Any, *where: Any) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).where(*where).group_by(column))
    return {str(key): count for key, count in rows}


def _background_summary(session: Session, celery_app: Celery, now: dt.datetime) -> dict[str, Any]:
    settings = get_settings()
    lost_before = now - dt.timedelta(seconds=settings.background_lost_after_seconds)
    health = session.execute(
        LEDGER["summary"], {"now": now, "lost_before": lost_before, **limit_params(celery_app)}
    ).one()
    by_type: dict[str, dict[str, int]] = {}
    for task_type, state, count in session.execute(
        select(BackgroundTask.task_type, BackgroundTask.status, func.count()).group_by(
            BackgroundTask.task_type, BackgroundTask.status
        )
    ):
        by_type.setdefault(task_type, {})[state] = count
    oldest = health.oldest_pending_seconds
    return {
        "total": sum(sum(states.values()) for states in by_type.values()),
        "by_status": _counts(session, BackgroundTask.status),
        "by_type": by_type,
        "oldest_pending_seconds": None if oldest is None else round(float(oldest), 1),
        # Rows cleanup.stuck_tasks will move on its next run.
        "stuck_processing": health.stuck_processing,
        "lost_pending": health.lost_pending,
        "undispatched": health.undispatched,
    }


def build_status(session: Session, celery_app: Celery, now: dt.datetime) -> dict[str, Any]:
    """Everything an operator checks first, from PostgreSQL alone."""
    day_ago = now - dt.timedelta(days=1)
    playlist_totals = session.execute(
        select(func.count(), func.max(SmartPlaylist.generated_at))
    ).one()
    trending = session.execute(select(func.count(), func.max(TrendingTrack.calculated_at))).one()
    dead = session.execute(select(func.count(), func.max(DeadLetter.received_at))).one()
    return {
        "generated_at": _iso(now),
        "background_tasks": _background_summary(session, celery_app, now),
        "smart_playlists": {
            "total": playlist_totals[0],
            "by_type": _counts(session, SmartPlaylist.playlist_type),
            "latest_generated_at": _iso(playlist_totals[1]),
        },
        "trending": {"tracks": trending[0], "last_calculated_at": _iso(trending[1])},
        "enrichment": enrichment_progress(session),
        "workflows": workflows_summary(session, now),
        "ingest": ingest_control.summary(session, now, get_settings()),
        "task_runs_24h": _counts(session, TaskRun.status, TaskRun.started_at >= day_ago),
        "dead_letters": {"total": dead[0], "latest_at": _iso(dead[1])},
        "broker_resets": _broker_resets(session),
        "schedule": schedule_view(session, now),
    }


def _broker_resets(session: Session) -> dict[str, Any]:
    """Times Redis was found without its data (or new), and what was republished."""
    total = session.scalar(select(func.count()).select_from(BrokerReset))
    latest = session.scalars(select(BrokerReset).order_by(BrokerReset.detected_at.desc())).first()
    return {
        "total": total,
        "latest": None
        if latest is None
        else {
            "detected_at": _iso(latest.detected_at),
            "detected_by": latest.detected_by,
            "ledger_republished": latest.ledger_republished,
        },
    }


def queue_depths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting per queue, over its priority lists."""
    names = all_queue_names()
    pipe = client.pipeline()
    for name in names:
        for key in redis_keys(name):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {name: sum(next(lengths) for _ in PRIORITY_STEPS) for name in names}


def amqp_queue_depths(celery_app: Celery) -> dict[str, int]:
    """Messages waiting per queue in RabbitMQ (ready, not held by a worker), as a passive
    declare reports them; a queue no worker has declared yet holds nothing."""
    depths: dict[str, int] = {}
    with celery_app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)
        for name in all_queue_names():
            # A passive declare of a missing queue closes its channel: one channel each.
            channel = connection.channel()
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except connection.channel_errors:
                depths[name] = 0
            finally:
                with contextlib.suppress(*connection.connection_errors, *connection.channel_errors):
                    channel.close()
    return depths


def collect_status(
    session: Session, celery_app: Celery, now: dt.datetime, redis_url: str
) -> dict[str, Any]:
    report = build_status(session, celery_app, now)
    amqp = get_settings().broker_is_amqp
    if amqp:
        try:
            report["queues"] = amqp_queue_depths(celery_app)
        except kombu.exceptions.OperationalError as exc:
            report["queues"] = {"error": f"RabbitMQ unavailable: {exc}"}
    try:
        with redis.Redis.from_url(redis_url, socket_connect_timeout=3) as client:
            if not amqp:
                report["queues"] = queue_depths(client)
            # Run records and dead letters not yet in PostgreSQL (it is down, or every
            # worker is): they land as soon as a worker's drainer can write them.
            report["run_journal_waiting"] = pending_entries(client)
            report["enrichment"]["spotify_paused"] = spotify_pause(get_settings(), client)
            # None: a restart of this Redis loses every queued message (README). On
            # RabbitMQ the queues are quorum queues, on disk on a majority of its nodes.
            report["broker"] = {
                "persistence": QUORUM_QUEUES if amqp else liveness.persistence(client),
                "workers_alive": liveness.live_workers(client),
            }
    except redis.RedisError as exc:
        if not amqp:
            report["queues"] = {"error": f"Redis unavailable: {exc}"}
    return report
