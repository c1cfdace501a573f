"""Rows in, messages out: enqueueing ledger rows and publishing their messages."""

from __future__ import annotations

from typing import Any

import psycopg
from celery import Celery
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import channels
from db.session import session_scope
from worker.ledger.outbox import Source
from worker.ledger.task import SQL, UnknownTrackError, ledger_task_name, ledger_tasks
from worker.publishing import publish_after_commit
from worker.queues import home_queue

MAX_PRIORITY = 9


def redis_priority(priority: int) -> int:
    """Ledger priority (9 most urgent) to kombu's Redis priority (0 served first)."""
    return MAX_PRIORITY - max(0, min(MAX_PRIORITY, priority))


def enqueue(
    session: Session, app: Celery, task_type: str, track_id: int, *, priority: int = 0
) -> int | None:
    """Record a background task and publish its message once ``session`` commits.

    Returns the new row's id, or None when an active row for (type, track) already exists
    (the request collapsed into it).
    """
    rows = enqueue_many(session, app, task_type, [track_id], priority=priority)
    return rows[0] if rows else None


def enqueue_many(
    session: Session, app: Celery, task_type: str, track_ids: list[int], *, priority: int = 0
) -> list[int]:
    """``enqueue`` for many tracks: one INSERT, one message per new row after the commit.

    Returns the new rows' ids; a track that already has an active row of this type gets
    none. A track that does not exist fails the whole call, naming it.
    """
    name = ledger_task_name(app, task_type)
    try:
        with session.begin_nested():
            rows = session.execute(
                SQL["enqueue_many"],
                {"task_type": task_type, "track_ids": list(track_ids), "priority": priority},
            ).all()
    except IntegrityError as exc:
        if isinstance(exc.orig, psycopg.errors.ForeignKeyViolation):
            missing = list(session.scalars(SQL["missing_tracks"], {"track_ids": list(track_ids)}))
            raise UnknownTrackError(
                f"{task_type}: there is no track {', '.join(map(str, missing[:20]))}"
                + (f" (and {len(missing) - 20} more)" if len(missing) > 20 else "")
            ) from exc
        raise
    for row in rows:
        publish_after_commit(
            session,
            app.signature(
                name,
                args=(row.track_id,),
                kwargs={"background_task_id": row.id},
                task_id=row.celery_task_id,
                priority=redis_priority(priority),
            ),
        )
    return [row.id for row in rows]


def dispatch_pending(session_factory: Any, app: Celery, *, batch: int = 500) -> int:
    """Publish a message for every pending row that has none; how many were published.

    Each batch is taken (stamped with a message id) and published inside one transaction,
    which commits only after the last publish. A crash or an error in between leaves the
    rows as they were, unpublished, and the next dispatch publishes them again: a message
    that did go out claims its row first, and its twin finds the row taken. (Committing
    first and publishing after would leave rows that look published and are not, for the
    lost-message rule to find a quarter of an hour later.)
    """
    names = ledger_tasks(app)
    published = 0
    while True:
        with session_factory() as session:
            rows = session.execute(SQL["take_undispatched"], {"batch": batch}).all()
            if not rows:
                return published
            with app.producer_or_acquire() as producer:
                for row in rows:
                    name = names.get(row.task_type)
                    if name is None:
                        session.execute(
                            SQL["fail_unknown_type"],
                            {
                                "id": row.id,
                                "error": f"unknown background task type {row.task_type!r}",
                            },
                        )
                        continue
                    app.send_task(
                        name,
                        args=(row.track_id,),
                        kwargs={"background_task_id": row.id},
                        task_id=row.celery_task_id,
                        priority=redis_priority(row.priority),
                        producer=producer,
                    )
                    published += 1
        if len(rows) < batch:
            return published


def ledger_queues(app: Celery) -> set[str]:
    """The queues of ``app``'s ledger tasks: a worker consuming one dispatches the ledger."""
    return {home_queue(name) for name in ledger_tasks(app).values()}


# Rows inserted without a message (a track inserted by plain SQL gets its analysis rows
# from a trigger; the rescuer puts orphans back): the outbox dispatcher publishes them.
LEDGER_SOURCE = Source(
    channels.BACKGROUND_TASKS,
    queues=ledger_queues,
    dispatch=lambda app: dispatch_pending(session_scope, app),
)
