"""The ledger's lifeline: rows whose worker died or whose message was lost."""

from __future__ import annotations

import datetime as dt

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import channels
from worker.ledger.task import SQL, limit_params
from worker.settings import Settings


def rescue_stuck_tasks(
    session: Session, celery_app: Celery, now: dt.datetime, settings: Settings
) -> dict[str, int]:
    """Settle the ledger's orphans; returns how many rows each rule moved.

    A ``processing`` row older than its task's hard time limit has lost its worker (the
    limit kills any run that reaches it): back to ``pending`` with the attempt counted, or
    ``failed`` with the reason once ``BACKGROUND_MAX_ATTEMPTS`` runs have died. A
    ``pending`` row whose message went out more than ``BACKGROUND_LOST_AFTER_SECONDS`` ago
    lost it. Both get ``enqueued_at = NULL``; the NOTIFY sent at commit wakes the
    dispatcher (``worker.ledger.outbox``), which publishes fresh messages.
    """
    params = {"now": now, "max_attempts": settings.background_max_attempts}
    params |= limit_params(celery_app)
    failed = len(session.execute(SQL["fail_exhausted_orphans"], params).all())
    requeued = len(session.execute(SQL["requeue_orphans"], params).all())
    lost_before = now - dt.timedelta(seconds=settings.background_lost_after_seconds)
    republished = len(
        session.execute(SQL["requeue_lost_messages"], {"lost_before": lost_before}).all()
    )
    if requeued or republished:
        session.execute(
            text("SELECT pg_notify(:channel, '')"), {"channel": channels.BACKGROUND_TASKS}
        )
    return {"failed": failed, "requeued": requeued, "republished": republished}
