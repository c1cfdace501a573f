"""The dispatcher: publishes ledger rows that were inserted without a message.

Any service may insert a track by plain SQL; the database queues its analysis rows in the
same transaction (migration 0004) and NOTIFYs ``background_tasks`` at commit. Each worker
that consumes a ledger task's queue runs one dispatcher thread in its main process: it
LISTENs, and on a notification (or every ``BACKGROUND_DISPATCH_INTERVAL_SECONDS``, in case
one was missed while it reconnected) publishes every undispatched row. Several workers may
run one each; ``FOR UPDATE SKIP LOCKED`` gives each row to one of them. No process of its
own: it lives and dies with the worker.

Other families register sources of their own the same way (``register_source``): the
enrichment's completed uploads are one. A worker's dispatcher serves the sources whose
queues that worker consumes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from celery import Celery, signals
from sqlalchemy import make_url

from db.session import session_scope
from worker.ledger import dispatch_pending, ledger_tasks
from worker.queues import home_queue
from worker.settings import get_settings

log = logging.getLogger(__name__)

CHANNEL = "background_tasks"


@dataclass(frozen=True)
class Source:
    """Rows that wait for a message: a NOTIFY channel and how to publish what waits."""

    channel: str
    queues: Callable[[Celery], set[str]]  # a worker consuming any of these serves it
    dispatch: Callable[[Celery], int]  # publish what waits; how many were published


_sources: dict[str, Source] = {}


def register_source(source: Source) -> None:
    _sources[source.channel] = source


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


def ledger_queues(app: Celery) -> set[str]:
    return {home_queue(name) for name in ledger_tasks(app).values()}


register_source(
    Source(
        CHANNEL,
        queues=ledger_queues,
        dispatch=lambda app: dispatch_pending(session_scope, app),
    )
)


@signals.worker_ready.connect
def _start_dispatcher(sender: Any, **_: Any) -> None:
    consumed = {queue.name for queue in sender.task_consumer.queues}
    sources = [s for s in _sources.values() if consumed & s.queues(sender.app)]
    if "dispatcher" in _running or not sources:
        return
    settings = get_settings()
    dispatcher = Dispatcher(
        sender.app,
        settings.database_url,
        settings.background_dispatch_interval_seconds,
        sources,
    )
    dispatcher.start()
    _running["dispatcher"] = dispatcher


@signals.worker_shutdown.connect
def _stop_dispatcher(**_: Any) -> None:
    dispatcher = _running.pop("dispatcher", None)
    if dispatcher is not None:
        dispatcher.stop()
        dispatcher.join(timeout=10)
