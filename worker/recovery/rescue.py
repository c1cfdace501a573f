"""Rows and runs of workers that stopped renewing their lease."""

from __future__ import annotations

import datetime as dt

import redis
from celery import Celery
from sqlalchemy.orm import Session

from db.queries import queries
from tasks.ingest import rescue as ingest_rescue
from tasks.workflows import rescue as workflows_rescue
from worker import liveness
from worker.ledger.enqueue import ledger_queues
from worker.ledger.rescue import processing_hosts, rescue_stuck_tasks
from worker.recovery.census import republish_unheld
from worker.settings import Settings

JOURNAL = queries("worker", "run_journal")


def dead_hosts(
    client: redis.Redis, hosts: set[str], now: float, lease_seconds: float
) -> frozenset[str]:
    """Which of ``hosts`` have no live heartbeat, when heartbeats can be believed: not
    within one lease of a new epoch (Redis lost its data, heartbeats included, and live
    workers have not all written theirs again yet).
    """
    if not hosts:
        return frozenset()
    age = liveness.epoch_age(client, now)
    if age is None or age < lease_seconds:
        return frozenset()
    return frozenset(host for host, up in liveness.alive(client, hosts).items() if not up)


def rescue(
    session: Session,
    celery_app: Celery,
    client: redis.Redis,
    now: dt.datetime,
    settings: Settings,
) -> dict[str, int]:
    """Requeue or fail the ledger rows, workflow executions and ingest jobs of dead workers
    (the tables whose rows workers claim), mark their runs ``lost``, publish
    again rows whose message Redis lost (the census, Redis broker only), and apply the
    ledger's time-limit and lost-message rules; how many rows each rule moved."""
    hosts = (
        processing_hosts(session)
        | workflows_rescue.processing_hosts(session)
        | ingest_rescue.processing_hosts(session)
        | set(session.scalars(JOURNAL["running_hosts"]))
    )
    dead = dead_hosts(client, hosts, now.timestamp(), settings.worker_lease_seconds)
    moved = rescue_stuck_tasks(session, celery_app, now, settings, dead_hosts=dead)
    moved |= workflows_rescue.rescue_executions(session, now, settings, dead)
    moved |= ingest_rescue.rescue_jobs(session, now, settings, dead)
    started_before = now - dt.timedelta(seconds=settings.worker_lease_seconds)
    lost = session.execute(
        JOURNAL["mark_unfinished_runs_lost"],
        {
            "hosts": sorted(dead),
            "started_before": started_before,
            "reason": "its worker %s stopped renewing its lease (presumed dead)",
        },
    ).all()
    # The census reads kombu's Redis lists and unacked hash. RabbitMQ records a delivery as
    # it makes it (no BRPOP window to lose one in), and holds its queues itself: there the
    # census would find every pending row's message missing.
    unheld = (
        0
        if settings.broker_is_amqp
        else republish_unheld(session, client, ledger_queues(celery_app), now)
    )
    return {**moved, "unheld": unheld, "runs_lost": len(lost), "dead_workers": len(dead)}
