"""The executions' lifeline: rows whose worker died mid-run, or whose message was lost.

Called by the recovery (``cleanup.stuck_tasks``, every minute) with the workers known dead
(``worker.liveness``), as the ledger's rows are. A ``processing`` execution whose worker
is dead, or that outlived the task's hard time limit, goes back to ``pending`` (or to
``failed`` when it was its last attempt); a ``pending`` one whose message should have
arrived ``BACKGROUND_LOST_AFTER_SECONDS`` ago is published again. The dispatcher, woken
at commit, publishes them. Actions recorded as done are not run again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.channels import JOB_STATUS_CHANGES
from db.queries import queries
from tasks.workflows.matching import EXECUTE_TASK
from worker.queues import family_of
from worker.settings import Settings

SQL = queries("tasks.workflows", "workflows")


def processing_hosts(session: Session) -> set[str]:
    return set(session.scalars(SQL["processing_hosts"]))


def rescue_executions(
    session: Session, now: dt.datetime, settings: Settings, dead_hosts: frozenset[str]
) -> dict[str, int]:
    params = {
        "now": now,
        "dead_hosts": sorted(dead_hosts),
        # A row claimed after its worker's last renewal could not have been claimed by it.
        "claimed_before": now - dt.timedelta(seconds=settings.worker_lease_seconds),
        "time_limit": family_of(EXECUTE_TASK).time_limit,
    }
    failed = len(session.execute(SQL["fail_exhausted_orphans"], params).all())
    requeued = len(session.execute(SQL["requeue_orphans"], params).all())
    lost_before = now - dt.timedelta(seconds=settings.background_lost_after_seconds)
    republished = len(
        session.execute(SQL["requeue_lost_messages"], {"lost_before": lost_before}).all()
    )
    if requeued or republished:
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOB_STATUS_CHANGES})
    return {
        "executions_failed": failed,
        "executions_requeued": requeued,
        "executions_republished": republished,
    }


def republish_after_broker_reset(session: Session, noticed_at: dt.datetime) -> int:
    """Fresh messages for executions published or claimed before Redis lost its data."""
    republished = len(
        session.execute(SQL["republish_after_broker_reset"], {"noticed_at": noticed_at}).all()
    )
    if republished:
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOB_STATUS_CHANGES})
    return republished
