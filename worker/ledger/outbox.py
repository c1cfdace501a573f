"""The outbox: a table fires work through NOTIFY, and a dispatcher publishes its messages.

The mechanism, for any table whose rows need a message that plain SQL cannot send: a
trigger (``db/triggers/``) NOTIFYs a channel (``db.channels``) when a row needs one, and
the rows that wait are marked in the table itself (the outbox). Each worker that consumes a
source's queues runs one dispatcher thread in its main process: it LISTENs on its sources'
channels, and on a notification (or every ``BACKGROUND_DISPATCH_INTERVAL_SECONDS``, in case
one was missed while it reconnected) has each source publish what waits. Several workers
may run one each; each source takes its rows with ``FOR UPDATE SKIP LOCKED``, so a row goes
to one of them. No process of its own: it lives and dies with the worker.

The sources are listed where the app is built (``worker.celery_app.OUTBOX_SOURCES``), not
registered by importing a module: the ledger's own rows (a track inserted by plain SQL gets
its analysis rows from a trigger) and the enrichment's completed uploads today.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from celery import Celery, signals
from kombu.utils.imports import symbol_by_name
from sqlalchemy import make_url

from worker.settings import get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Rows that wait for a message: a NOTIFY channel and how to publish what waits."""

    channel: str
    queues: Callable[[Celery], set[str]]  # a worker consuming any of these serves it
    dispatch: Callable[[Celery], int]  # publish what waits; how many were published


def conninfo(database_url: str) -> str:
    """A libpq connection string for psycopg from our SQLAlchemy URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Dispatcher(threading.Thread):
    def __init__(
        self, app: Celery, database_url: str, interval: float, sources: list[Source]
    ) -> None:
        super().__init__(name="dispatcher", daemon=True)
        self.app = app
        self.conninfo = conninfo(database_url)
        self.interval = interval
        self.sources = sources
        self.stopping = threading.Event()

    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    for source in self.sources:
                        conn.execute(f"LISTEN {source.channel}")
                    backoff = 1.0
                    while not self.stopping.is_set():
                        self.dispatch_all()
                        # Wake on the first notification, or after the interval regardless.
                        for _ in conn.notifies(timeout=self.interval, stop_after=1):
                            pass
            except Exception:
                log.exception("dispatcher: retrying in %.0f s", backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def dispatch_all(self) -> None:
        for source in self.sources:
            published = source.dispatch(self.app)
            if published:
                log.info("dispatched %d message(s) for %s", published, source.channel)

    def stop(self) -> None:
        self.stopping.set()


# The worker process's one dispatcher (signals give no other place to keep it).
_running: dict[str, Dispatcher] = {}


def resolve(names: list[str]) -> list[Source]:
    """The sources named ``module:attribute``; a wrong name or a shared channel raises."""
    sources = [symbol_by_name(name) for name in names]
    for name, source in zip(names, sources, strict=True):
        if not isinstance(source, Source):
            raise TypeError(f"outbox source {name} is a {type(source).__name__}, not a Source")
    channels = [source.channel for source in sources]
    if len(set(channels)) != len(channels):
        raise ValueError(f"outbox sources share a channel: {channels}")
    return sources


def install(app: Celery, source_names: list[str]) -> None:
    """Run a dispatcher in each worker of ``app`` that consumes a queue of the sources."""

    def start(sender: Any, **_: Any) -> None:
        if sender.app is not app:
            return
        sources = resolve(source_names)
        consumed = {queue.name for queue in sender.task_consumer.queues}
        serving = [s for s in sources if consumed & s.queues(app)]
        if "dispatcher" in _running or not serving:
            return
        settings = get_settings()
        dispatcher = Dispatcher(
            app,
            settings.database_url,
            settings.background_dispatch_interval_seconds,
            serving,
        )
        dispatcher.start()
        _running["dispatcher"] = dispatcher

    def stop(**_: Any) -> None:
        dispatcher = _running.pop("dispatcher", None)
        if dispatcher is not None:
            dispatcher.stop()
            dispatcher.join(timeout=10)

    # Strong references: the handlers are closures, which a weak one would lose at once.
    signals.worker_ready.connect(start, weak=False)
    signals.worker_shutdown.connect(stop, weak=False)
