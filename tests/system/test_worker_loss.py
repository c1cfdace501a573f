"""A dead worker's messages come back one lease after its last renewal; a live one's never.

Real ``celery worker`` subprocesses on the analysis queue (the in-process test worker
leaves it alone), with a lease of a few seconds (``WORKER_LEASE_SECONDS``) so that "one
lease" is short enough to wait for here. Without the lease, Redis would hand a dead
worker's message back only after kombu's visibility timeout (two hours, as configured
before), and a shorter timeout alone would hand a live worker's long task to a second one.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from sqlalchemy import select

from db.models import TaskRun
from tests.support import needs_redis_broker, runs_of, wait_for, worker_process

LEASE = 4
ENV = {"WORKER_LEASE_SECONDS": str(LEASE)}
EXTRA = "tests.system.extra_tasks"


def finished(session: Any, task_id: str) -> list[TaskRun]:
    runs = runs_of(session, task_id)
    return runs if runs and all(r.finished_at or r.status == "lost" for r in runs) else []


@needs_redis_broker("leases; RabbitMQ's redelivery on connection loss is test_rabbitmq.py's")
def test_a_killed_workers_message_runs_on_another_worker_within_a_lease(
    session: Any, app: Any
) -> None:
    with worker_process(app, "analysis", env=ENV, app_module=EXTRA) as doomed:
        result = app.send_task(
            "analysis.test_sleep", kwargs={"seconds": 600, "redelivered_seconds": 0}
        )
        wait_for(lambda: runs_of(session, result.id), timeout=30)
        os.killpg(doomed.pid, signal.SIGKILL)  # the whole host is gone: parent and child
        doomed.wait()
        killed_at = time.monotonic()

    with worker_process(app, "analysis", env=ENV, app_module=EXTRA) as survivor:
        survivor_name = result.get(timeout=60)
        back_after = time.monotonic() - killed_at

    runs = wait_for(lambda: finished(session, result.id), timeout=30)
    assert [(r.delivery, r.status) for r in runs] == [(1, "lost"), (2, "success")]
    assert runs[1].worker_host == survivor_name != runs[0].worker_host
    assert survivor.returncode is not None
    # Under the old two-hour visibility timeout this would still be waiting; the bound
    # here is the lease plus the new worker's start and sweep, with room for a slow CI.
    assert back_after < LEASE + 45


@needs_redis_broker("leases: RabbitMQ keeps a live consumer's message, however long it runs")
def test_a_task_running_for_several_leases_on_a_live_worker_runs_once(
    session: Any, app: Any
) -> None:
    with (
        worker_process(app, "analysis", env=ENV, app_module=EXTRA),
        worker_process(app, "analysis", env=ENV, app_module=EXTRA),
    ):
        result = app.send_task("analysis.test_sleep", kwargs={"seconds": 3 * LEASE})
        result.get(timeout=60)
        # Long enough after the finish for a wrongly handed back copy to have started.
        time.sleep(LEASE)

    runs = wait_for(lambda: finished(session, result.id), timeout=30)
    assert [(r.delivery, r.status) for r in runs] == [(1, "success")]


def test_a_message_held_for_its_countdown_past_the_lease_runs_once(session: Any, app: Any) -> None:
    with (
        worker_process(app, "analysis", env=ENV, app_module=EXTRA),
        worker_process(app, "analysis", env=ENV, app_module=EXTRA),
    ):
        # A countdown (a retry's, say) is held by a worker, unacknowledged, until it is due.
        result = app.send_task("analysis.test_sleep", kwargs={"seconds": 0}, countdown=3 * LEASE)
        result.get(timeout=60)
        time.sleep(LEASE)

    runs = wait_for(lambda: finished(session, result.id), timeout=30)
    assert [(r.delivery, r.status) for r in runs] == [(1, "success")]
    everything = session.scalars(select(TaskRun.task_name)).all()
    assert everything.count("analysis.test_sleep") == 1
