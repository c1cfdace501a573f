"""Worker liveness: how a dead worker's work comes back in a minute, and never sooner.

Redis has no notion of a consumer. kombu keeps a taken but unacknowledged message in a
hash, indexed by the time it was taken, and every worker's periodic sweep puts back on its
queue any message older than the visibility timeout. A long timeout makes a dead worker's
messages wait that long (two hours here, before this module); a short one hands a long
task, or a message held for its ETA or retry countdown, to a second worker while the first
still runs it.

So the timeout is short (``WORKER_LEASE_SECONDS``) and held messages are leased: a thread
in every worker's main process stamps each message the worker holds with the current time,
several times per lease. Only a message whose worker stopped stamping (killed, frozen,
cut off from Redis) grows old enough to be handed back. The thread is not the event loop,
so a solo pool or a busy loop does not starve it.

The same thread keeps the worker's heartbeat (a key that expires one lease after the last
stamp), which ``cleanup.stuck_tasks`` reads to tell a dead worker's ledger rows and runs
from a live one's, and watches the broker's epoch: a key that exists as long as Redis keeps
its data. A worker that finds it missing creates it and sends ``cleanup.broker_reset``, so
ledger rows whose messages Redis lost are published again at once, and the loss is on
record.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis
from celery import Celery, bootsteps

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "automation:worker:"
EPOCH_KEY = "automation:broker:epoch"
# The task that answers a new epoch (registered in worker.recovery.tasks).
BROKER_RESET_TASK = "cleanup.broker_reset"
# Stamps per lease: a worker may miss all but one and keep its messages.
STAMPS_PER_LEASE = 6


def renew_interval(lease_seconds: float) -> float:
    return lease_seconds / STAMPS_PER_LEASE


def stamp(client: redis.Redis, index_key: str, tags: Iterable[str], now: float) -> int:
    """Renew the lease of every message in ``tags`` still unacknowledged; how many were.

    ``XX``: a tag acknowledged (or handed back) since it was read is not put back.
    """
    mapping = dict.fromkeys(tags, now)
    if not mapping:
        return 0
    # CH: count members whose score changed (a stamp within the same clock tick changes
    # nothing, so the count is a lower bound; only tests and logs read it).
    return int(client.zadd(index_key, mapping, xx=True, ch=True) or 0)


def beat_heart(
    client: redis.Redis, hostname: str, lease_seconds: float, info: dict[str, Any]
) -> None:
    client.set(HEARTBEAT_PREFIX + hostname, json.dumps(info), ex=max(1, round(lease_seconds)))


def alive(client: redis.Redis, hostnames: Iterable[str]) -> dict[str, bool]:
    """Which of ``hostnames`` renewed their heartbeat within the last lease."""
    names = list(dict.fromkeys(hostnames))
    if not names:
        return {}
    values = client.mget([HEARTBEAT_PREFIX + name for name in names])
    return {name: value is not None for name, value in zip(names, values, strict=True)}


def new_epoch(client: redis.Redis, now: float) -> str | None:
    """Create the broker's epoch if it is missing; the new epoch, or None if one existed.

    A missing epoch means Redis is new, or lost its data (restarted without persistence,
    flushed, failed over to an empty replica). Exactly one caller creates each epoch.
    """
    epoch = f"{now:.3f}:{uuid.uuid4().hex[:12]}"
    return epoch if client.set(EPOCH_KEY, epoch, nx=True) else None


def epoch_age(client: redis.Redis, now: float) -> float | None:
    """Seconds since the broker's epoch began, or None when there is none."""
    value = client.get(EPOCH_KEY)
    if value is None:
        return None
    started = float((value.decode() if isinstance(value, bytes) else str(value)).split(":")[0])
    return now - started


def live_workers(client: redis.Redis) -> list[str]:
    """Workers whose heartbeat is current, by hostname."""
    return sorted(
        key.decode().removeprefix(HEARTBEAT_PREFIX)
        for key in client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=1000)
    )


def worker_info(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Each live worker's heartbeat: its pid, host, start time and queues."""
    names = live_workers(client)
    values = client.mget([HEARTBEAT_PREFIX + name for name in names]) if names else []
    return {
        name: dict(json.loads(value))
        for name, value in zip(names, values, strict=True)
        if value is not None
    }


def worker_queues(client: redis.Redis) -> dict[str, list[str]]:
    """Each live worker's queues, as its heartbeat reports them."""
    return {name: list(info.get("queues", [])) for name, info in worker_info(client).items()}


def persistence(client: redis.Redis) -> str | None:
    """How Redis keeps its data across a restart (``aof``, ``rdb``), None if it keeps
    nothing, or why it cannot be told (managed Redis often disables CONFIG)."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("save")}
    except redis.ResponseError as exc:
        return f"unknown ({exc})"
    kept = [
        *(["aof"] if config.get("appendonly") == "yes" else []),
        *(["rdb"] if config.get("save") else []),
    ]
    return "+".join(kept) or None


VOLATILE_BROKER = (
    "Redis at %s keeps nothing across a restart (no append-only file, no snapshots): if it "
    "restarts, every queued message is lost. The ledger's work is published again from "
    "PostgreSQL; other queued tasks are gone until beat or their sender sends them again. "
    "Run Redis with --appendonly yes (docker-compose.yml and automation up do)."
)


class Renewer(threading.Thread):
    """Stamps the held messages, the heartbeat and the epoch, every ``interval`` seconds."""

    def __init__(
        self,
        *,
        client: redis.Redis,
        index_key: str | None,
        held: Callable[[], list[str]],
        hostname: str,
        lease_seconds: float,
        on_new_epoch: Callable[[str], None],
        queues: list[str] | None = None,
    ) -> None:
        super().__init__(name="automation-lease", daemon=True)
        self.client = client
        self.index_key = index_key
        self.held = held
        self.hostname = hostname
        self.lease_seconds = lease_seconds
        self.on_new_epoch = on_new_epoch
        # The queues let a readiness check tell that every queue has a live consumer.
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "queues": queues or [],
        }
        self._stopping = threading.Event()

    def run(self) -> None:
        interval = renew_interval(self.lease_seconds)
        while not self._stopping.is_set():
            try:
                self.renew_once()
            except redis.RedisError as exc:
                # Redis unreachable: nothing can be stamped, and nothing can be handed
                # back either until it returns. Try again next time round.
                log.warning("lease renewal failed (Redis unreachable?): %s", exc)
            except Exception:
                log.exception("lease renewal failed")
            self._stopping.wait(interval)

    def renew_once(self) -> None:
        now = time.time()
        if self.index_key is not None:  # None: RabbitMQ, which holds no leases to renew
            stamp(self.client, self.index_key, self.held(), now)
        beat_heart(self.client, self.hostname, self.lease_seconds, self.info)
        epoch = new_epoch(self.client, now)
        if epoch is not None:
            self.on_new_epoch(epoch)

    def stop(self) -> None:
        self._stopping.set()


def held_tags(qos: Any) -> Callable[[], list[str]]:
    """The delivery tags a kombu virtual channel holds unacknowledged.

    kombu's QoS keeps them in ``_delivered`` (prefetched, running, and held for an ETA or
    countdown alike); Celery's own request lists miss the ETA ones. Read from this thread
    while the event loop changes it, so copied, and read again if it changed meanwhile.
    """

    def read() -> list[str]:
        for _ in range(5):
            try:
                return [str(tag) for tag in list(qos._delivered)]
            except RuntimeError:  # changed size during the copy
                continue
        return []

    return read


def _announce_new_epoch(app: Celery, hostname: str) -> Callable[[str], None]:
    def announce(epoch: str) -> None:
        log.warning(
            "Redis holds no broker epoch: it is new, or it lost its data (restarted without "
            "persistence, flushed, failed over). New epoch %s; sending %s to republish what "
            "the ledger had queued",
            epoch,
            BROKER_RESET_TASK,
        )
        app.send_task(BROKER_RESET_TASK, kwargs={"epoch": epoch, "detected_by": hostname})

    return announce


class Lease(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery ships no type hints
    """Consumer step: runs a ``Renewer`` on the task consumer's channel while it is up.

    Restarted with the consumer (a broker reconnect makes a new channel). Only the Redis
    transport needs the stamps: RabbitMQ hands a dead consumer's messages back on its own
    when its connection closes. The heartbeat and the epoch live in Redis on either broker
    (``cleanup.stuck_tasks`` reads the one, and believes it only a lease after the other
    began), so on RabbitMQ the renewer runs without stamps.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.renewer: Renewer | None = None
        self._warned = False

    def start(self, c: Any) -> None:
        channel = c.task_consumer.channel
        # kombu's Redis channel keeps its unacknowledged messages under this key; an AMQP
        # channel has none (the broker tracks them).
        index_key = getattr(channel, "unacked_index_key", None)
        from worker.settings import get_settings

        settings = get_settings()
        # A client of its own, with timeouts: a connection stuck on a dead link must not
        # stop the renewals for good once the link is back.
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=10
        )
        if not self._warned and index_key is not None:
            # On RabbitMQ the queued messages are not in Redis: its restart loses none.
            self._warned = True
            if persistence(client) is None:
                where = client.connection_pool.connection_kwargs
                log.warning(
                    VOLATILE_BROKER,
                    f"{where.get('host', where.get('path'))}:{where.get('port')}/{where.get('db')}",
                )
        self.renewer = Renewer(
            client=client,
            index_key=index_key,
            held=held_tags(channel.qos) if index_key is not None else list,
            hostname=c.hostname,
            lease_seconds=settings.worker_lease_seconds,
            on_new_epoch=_announce_new_epoch(c.app, c.hostname),
            queues=sorted(queue.name for queue in c.task_consumer.queues),
        )
        self.renewer.start()

    def stop(self, c: Any) -> None:
        if self.renewer is not None:
            self.renewer.stop()
            self.renewer.join(timeout=15)
            self.renewer.client.close()
            self.renewer = None

    shutdown = stop


def transport_options(lease_seconds: float) -> dict[str, Any]:
    """kombu's Redis options that make the lease work: the visibility timeout is the lease,
    and every worker sweeps for expired messages several times a lease."""
    sweep = max(1.0, min(5.0, renew_interval(lease_seconds)))
    return {
        "visibility_timeout": lease_seconds,
        "unacked_restore_interval": sweep,
        # Every sweep scans (kombu's default scans one time in ten).
        "unacked_restore_throttle": 1,
        # The sweep's lock: a worker killed while holding it must not stop every sweep
        # for kombu's default five minutes.
        "unacked_mutex_expire": max(10, round(lease_seconds / 2)),
    }
