"""Queues, routing and per-family time limits: the one place that says where a task runs.

A task's family is the part of its public name before the dot (``trending.calculate`` is
in ``trending``). Each family has a home queue and time limits; each queue gets its own
workers, so a backlog of hour-long aggregations never delays a two-second analysis.

Messages sent by name without our routing land in Celery's default queue ``celery``
(``send_task`` with no queue, celery-node). The default workers also consume it, and the
consumer runs such a message if it also consumes the task's home queue, and otherwise
forwards it there (see ``worker.consumer``), so it runs on the right kind of worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue

DEFAULT_QUEUE = "default"
# Celery's own default queue name: where by-name senders that know nothing of our routing
# put their messages. Consumed by the default workers, which run what is at home with them
# and forward the rest to its home queue.
INBOX_QUEUE = "celery"


@dataclass(frozen=True)
class Family:
    queue: str
    soft_time_limit: int  # seconds: SoftTimeLimitExceeded is raised inside the task
    time_limit: int  # seconds: the child is killed


FAMILIES: dict[str, Family] = {
    "automation": Family(DEFAULT_QUEUE, soft_time_limit=60, time_limit=120),
    "cleanup": Family(DEFAULT_QUEUE, soft_time_limit=5 * 60, time_limit=10 * 60),
    # The alert check runs every minute; a webhook that hangs is cut off at 10 s a post.
    "monitoring": Family(DEFAULT_QUEUE, soft_time_limit=50, time_limit=60),
    "listening": Family("stats", soft_time_limit=50 * 60, time_limit=60 * 60),
    "trending": Family("stats", soft_time_limit=50 * 60, time_limit=60 * 60),
    "playlists": Family("playlists", soft_time_limit=15 * 60, time_limit=20 * 60),
    "enrichment": Family("enrichment", soft_time_limit=10 * 60, time_limit=15 * 60),
    "analysis": Family("analysis", soft_time_limit=5 * 60, time_limit=10 * 60),
    # Webhooks wait on other people's servers (each post is cut off at
    # WORKFLOW_WEBHOOK_TIMEOUT_SECONDS): their own workers, so a slow receiver never holds
    # up the default queue's cleanups and alerts.
    "workflows": Family("workflows", soft_time_limit=100, time_limit=120),
    # Media ingest: minutes of decoding and drawing per upload (a 60-minute file is read
    # whole once), on workers of their own so uploads never delay a two-second analysis.
    "ingest": Family("ingest", soft_time_limit=25 * 60, time_limit=30 * 60),
}
# Celery's built-ins (celery.backend_cleanup, chord_unlock, ...) and anything unknown.
FALLBACK = Family(DEFAULT_QUEUE, soft_time_limit=5 * 60, time_limit=10 * 60)

QUEUE_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys([DEFAULT_QUEUE, *(f.queue for f in FAMILIES.values())])
)

# Queues renamed away, each with the queue that took over its work. A renamed queue may
# still hold messages when the new workers start (published before the deploy by beat, a
# sender, or a retry's countdown), so the workers of the new queue keep draining the old
# one too, and ``automation status`` shows its depth. Remove an entry once its queue has
# stayed empty for a release. ``analytics`` became ``stats``: it was two letters from
# ``analysis`` (per-track audio), a different kind of worker.
RETIRED_QUEUES: dict[str, str] = {"analytics": "stats"}

# Redis message priorities: one list per step and queue, served 0 first. The ledger maps
# its priorities onto these (``worker.ledger``); other messages go at 0. RabbitMQ's quorum
# queues (3.10) have no priorities: there the priority travels and is ignored.
PRIORITY_STEPS = list(range(10))
PRIORITY_SEP = ":"


def redis_keys(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages, one per priority step."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def family_of(task_name: str) -> Family:
    return FAMILIES.get(task_name.partition(".")[0], FALLBACK)


def home_queue(task_name: str) -> str:
    return family_of(task_name).queue


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any
) -> dict[str, str]:
    """Celery router: every task goes to its family's queue."""
    return {"queue": home_queue(name)}


class FamilyLimits:
    """Celery task annotation giving each task its family's time limits."""

    def annotate(self, task: Any) -> dict[str, int]:
        family = family_of(task.name)
        return {"soft_time_limit": family.soft_time_limit, "time_limit": family.time_limit}


def worker_queues(queue: str) -> list[str]:
    """The queues a worker for ``queue`` consumes: the default workers also drain the inbox,
    and each queue's workers drain the queues it replaced."""
    retired = [old for old, new in RETIRED_QUEUES.items() if new == queue]
    return [queue, *([INBOX_QUEUE] if queue == DEFAULT_QUEUE else []), *retired]


def all_queue_names() -> list[str]:
    """Every queue a message may wait in: ours, the inbox, and the retired ones."""
    return [*QUEUE_NAMES, INBOX_QUEUE, *RETIRED_QUEUES]


# On RabbitMQ our queues hang off one topic exchange: Celery's native delayed delivery (how
# a countdown or ETA waits in the broker rather than in a worker's hands, which a quorum
# queue's fixed prefetch and consumer_timeout would not allow) binds only topic exchanges.
AMQP_EXCHANGE = Exchange("automation", type="topic")
QUORUM = {"x-queue-type": "quorum"}
# What Celery's native delayed delivery puts in front of a routing key: 28 bits, "0." or "1."
# each (kombu.transport.native_delayed_delivery).
_DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")


def celery_queues(amqp: bool = False) -> list[Queue]:
    if not amqp:
        return [Queue(name, routing_key=name) for name in all_queue_names()]
    ours = [n for n in all_queue_names() if n != INBOX_QUEUE]
    return [
        *(Queue(name, AMQP_EXCHANGE, routing_key=name, queue_arguments=QUORUM) for name in ours),
        # The inbox exactly as a plain Celery sender declares it (a classic queue on a direct
        # exchange of its name): RabbitMQ refuses a declaration that differs from the queue's,
        # so a quorum inbox would fail every by-name sender's publish.
        Queue(INBOX_QUEUE, Exchange(INBOX_QUEUE, type="direct"), routing_key=INBOX_QUEUE),
    ]


def arrival_queue(delivery_info: Any) -> str | None:
    """The queue a message was delivered from: its routing key, without the delay prefix
    RabbitMQ's delayed delivery adds (the key names the queue in both brokers' routing)."""
    key = (delivery_info or {}).get("routing_key") if isinstance(delivery_info, dict) else None
    return _DELAY_PREFIX.sub("", key) if isinstance(key, str) else None
