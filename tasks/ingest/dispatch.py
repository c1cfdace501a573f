"""Publishing queued jobs: the ingest workers' outbox source.

A job row, however it was made (another service's INSERT, the CLI, the API, the watcher),
wakes the dispatcher of the ingest workers at commit (db/triggers/ingest_jobs_notify.sql);
it also polls, so a job committed while no worker ran starts when one does. Each pass
publishes queued jobs oldest first, as many as there is room for: at most the batch size
in flight (published or running) and at most the rate per minute, both read live from
``ingest_pipeline``, and none while the pipeline is paused. The rest wait in PostgreSQL,
not in Redis, so a pause, a new batch size or a cleared failure takes effect at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from celery import Celery
from sqlalchemy.orm import Session

from db import channels
from db.queries import queries
from db.session import session_scope
from worker.ledger.outbox import Source
from worker.queues import home_queue
from worker.settings import Settings, get_settings

SQL = queries("tasks.ingest", "ingest")
PROCESS_TASK = "ingest.process"


def publish_queued(
    session_factory: Callable[[], AbstractContextManager[Session]],
    app: Celery,
    settings: Settings,
) -> int:
    """Publish what there is room for; how many jobs were published.

    The jobs are stamped with their message ids and published inside one transaction that
    commits after the last publish: a crash in between leaves them unpublished, for the
    next pass (a message that did go out claims its job; its twin finds it taken).
    """
    with session_factory() as session:
        session.execute(SQL["lock_dispatch"])
        room = session.execute(
            SQL["dispatch_room"],
            {
                "default_batch": settings.ingest_batch_size,
                "default_rate": settings.ingest_rate_per_minute or None,
            },
        ).one()
        if room.paused:
            return 0
        allowed = (
            room.batch_room if room.rate_room is None else min(room.batch_room, room.rate_room)
        )
        if allowed <= 0:
            return 0
        rows = session.execute(SQL["take_unpublished"], {"room": allowed}).all()
        if rows:
            with app.producer_or_acquire() as producer:
                for row in rows:
                    app.send_task(
                        PROCESS_TASK, args=(row.id,), task_id=row.celery_task_id, producer=producer
                    )
        return len(rows)


INGEST_SOURCE = Source(
    channels.INGEST_JOBS,
    queues=lambda app: {home_queue(PROCESS_TASK)},
    dispatch=lambda app: publish_queued(session_scope, app, get_settings()),
)
