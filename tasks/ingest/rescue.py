"""The ingest jobs' lifeline: jobs whose worker died mid-run, or whose message was lost.

Called by the recovery (``cleanup.stuck_tasks``, every minute) with the workers known dead
(``worker.liveness``), as the ledger's rows and the workflow executions are. A
``processing`` job whose worker is dead, or that outlived the task's hard time limit, goes
back to the queue (or fails, if that was its last attempt); a queued one whose message
should have arrived ``BACKGROUND_LOST_AFTER_SECONDS`` ago is published again. The
dispatcher, woken at commit by the jobs' trigger, publishes them; the steps they finished
are not run again.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from db.queries import queries
from tasks.ingest.dispatch import PROCESS_TASK
from worker.queues import family_of
from worker.settings import Settings

SQL = queries("tasks.ingest", "ingest")


def processing_hosts(session: Session) -> set[str]:
    return set(session.scalars(SQL["processing_hosts"]))


def rescue_jobs(
    session: Session, now: dt.datetime, settings: Settings, dead_hosts: frozenset[str]
) -> dict[str, int]:
    params = {
        "now": now,
        "dead_hosts": sorted(dead_hosts),
        # A job claimed after its worker's last renewal could not have been claimed by it.
        "claimed_before": now - dt.timedelta(seconds=settings.worker_lease_seconds),
        "time_limit": family_of(PROCESS_TASK).time_limit,
    }
    failed = len(session.execute(SQL["fail_exhausted_orphans"], params).all())
    requeued = len(session.execute(SQL["requeue_orphans"], params).all())
    lost_before = now - dt.timedelta(seconds=settings.background_lost_after_seconds)
    republished = len(
        session.execute(SQL["requeue_lost_messages"], {"lost_before": lost_before}).all()
    )
    return {
        "ingest_failed": failed,
        "ingest_requeued": requeued,
        "ingest_republished": republished,
    }


def republish_after_broker_reset(session: Session, noticed_at: dt.datetime) -> int:
    """Fresh messages for jobs published or claimed before Redis lost its data."""
    params = {"noticed_at": noticed_at}
    session.execute(SQL["fail_exhausted_after_broker_reset"], params)
    return len(session.execute(SQL["republish_after_broker_reset"], params).all())
