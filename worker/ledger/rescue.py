"""The ledger's lifeline: rows whose worker died or whose message was lost."""

from __future__ import annotations

import datetime as dt

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session

from db import channels
from worker.ledger.task import SQL, limit_params
from worker.settings import Settings


def processing_hosts(session: Session) -> set[str]:
    """The workers that hold ledger rows."""
    return set(session.scalars(SQL["processing_hosts"]))


def rescue_stuck_tasks(
    session: Session,
    celery_app: Celery,
    now: dt.datetime,
    settings: Settings,
    dead_hosts: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Settle the ledger's orphans; returns how many rows each rule moved.

    A ``processing`` row has lost its worker when that worker is one of ``dead_hosts``
    (it stopped renewing its lease; ``worker.liveness``) or when the row is older than its
    task's hard time limit (the limit kills any run that reaches it). It goes back to
    ``pending`` with the attempt counted, or to ``failed`` with the reason once
    ``BACKGROUND_MAX_ATTEMPTS`` runs have died. A ``pending`` row whose message went out
    more than ``BACKGROUND_LOST_AFTER_SECONDS`` ago lost it. Both get ``enqueued_at =
    NULL``; the NOTIFY sent at commit wakes the dispatcher (``worker.ledger.outbox``),
    which publishes fresh messages.
    """
    params = {
        "now": now,
        "max_attempts": settings.background_max_attempts,
        "dead_hosts": sorted(dead_hosts),
        # A row claimed after its worker's last renewal could not have been claimed by it.
        "claimed_before": now - dt.timedelta(seconds=settings.worker_lease_seconds),
    }
    params |= limit_params(celery_app)
    failed = len(session.execute(SQL["fail_exhausted_orphans"], params).all())
    requeued = len(session.execute(SQL["requeue_orphans"], params).all())
    lost_before = now - dt.timedelta(seconds=settings.background_lost_after_seconds)
    republished = len(
        session.execute(SQL["requeue_lost_messages"], {"lost_before": lost_before}).all()
    )
    if requeued or republished:
        wake_dispatcher(session)
    return {"failed": failed, "requeued": requeued, "republished": republished}


def republish_after_broker_reset(session: Session, noticed_at: dt.datetime) -> int:
    """Fresh messages for every row published or claimed before Redis lost its data."""
    republished = len(
        session.execute(SQL["republish_after_broker_reset"], {"noticed_at": noticed_at}).all()
    )
    if republished:
        wake_dispatcher(session)
    return republished


def wake_dispatcher(session: Session) -> None:
    # Sent at commit: the dispatcher (worker.ledger.outbox) publishes the rows it finds.
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channels.BACKGROUND_TASKS})
