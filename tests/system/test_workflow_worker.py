"""Event workflows through a real ``celery worker`` on the workflows queue: its dispatcher
matches changes made by plain SQL, executions post to a local receiver, and what the
receiver answers (500, 429, 400, a hang) decides retries.

The worker runs with retries measured in fractions of a second and a one-second webhook
timeout, so backoff is observable in a test; production's are WORKFLOW_RETRY_BASE_SECONDS
(10 s) and WORKFLOW_WEBHOOK_TIMEOUT_SECONDS (10 s).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from db.models import UploadJob, WorkflowExecution
from standins.webhook import Reply, Webhook
from tasks.automation.status import public_task_names
from tasks.workflows import store
from tasks.workflows.rescue import rescue_executions
from tests import factories as f
from tests.enrichment_support import TOKEN_KEY, cipher
from tests.integration.test_ledger import plain_sql
from tests.support import runs_of, wait_for, worker_process
from worker.settings import get_settings

SECRET = "receiver-shared-secret"
WORKER_ENV = {
    "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
    "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "WORKFLOW_RETRY_BASE_SECONDS": "1",
    "WORKFLOW_WEBHOOK_TIMEOUT_SECONDS": "1",
}


@pytest.fixture
def receiver() -> Iterator[Webhook]:
    with Webhook("/hook") as hook:
        yield hook


@pytest.fixture(scope="module")
def workflows_worker(app: Any) -> Iterator[Any]:
    """One worker for the module's later tests: it holds nothing between them. The tests
    before the first that asks for it start workers of their own, and no other."""
    with worker_process(app, "workflows", concurrency=2, env=WORKER_ENV) as process:
        yield process


def completed_upload(
    session: Any, app: Any, receiver: Webhook, *, test_tasks: tuple[str, ...] = (), **fields: Any
) -> tuple[int, int]:
    """A workflow posting to ``receiver`` when an upload completes, and an upload that then
    completes by plain SQL, as another service would; (workflow id, job id)."""
    user = f.user(session)
    workflow_id, _ = store.create(
        session,
        {
            "name": "tell the importer",
            "trigger": {"type": "job_status_changed", "source": "upload_jobs"},
            "conditions": {"all": [{"field": "new_status", "op": "eq", "value": "completed"}]},
            "actions": [{"type": "webhook", "url": receiver.url}],
            "secret": SECRET,
        }
        | fields,
        created_by="test",
        # Test tasks exist only in the workers that load tests.system.extra_tasks; this
        # process never imports it (its app's task list would change for later tests).
        known_tasks=[*public_task_names(app), *test_tasks],
        allowed_hosts={"127.0.0.1"},
        cipher=cipher(),
    )
    job = UploadJob(user_id=user.id, status="processing")
    session.add(job)
    session.commit()
    plain_sql("UPDATE upload_jobs SET status = 'completed' WHERE id = %s", job.id)
    return workflow_id, job.id


def settled(session: Any) -> WorkflowExecution | None:
    """The one execution, once it is completed or failed."""
    session.expire_all()
    rows = session.scalars(select(WorkflowExecution)).all()
    assert len(rows) <= 1, rows
    return rows[0] if rows and rows[0].status in ("completed", "failed") else None


def test_a_change_committed_while_no_worker_runs_fires_once_one_starts(
    session: Any, app: Any, receiver: Webhook
) -> None:
    completed_upload(session, app, receiver)

    with worker_process(app, "workflows", env=WORKER_ENV):
        wait_for(lambda: receiver.received, timeout=30)

    assert len(receiver.received) == 1


def test_a_worker_killed_mid_execution_is_rescued_and_the_execution_completes_once(
    session: Any, app: Any, receiver: Webhook
) -> None:
    receiver.script.append(Reply(204, hang_seconds=20))  # holds the first post
    patient = WORKER_ENV | {"WORKFLOW_WEBHOOK_TIMEOUT_SECONDS": "30"}
    completed_upload(session, app, receiver)

    with worker_process(app, "workflows", env=patient) as doomed:
        wait_for(lambda: receiver.received, timeout=30)
        os.killpg(doomed.pid, signal.SIGKILL)  # the whole host is gone: parent and child
        doomed.wait()
    session.expire_all()
    (orphan,) = session.scalars(select(WorkflowExecution)).all()
    assert orphan.status == "processing"

    # cleanup.stuck_tasks, once the task's hard time limit has passed since the claim.
    later = orphan.started_at + dt.timedelta(minutes=3)
    moved = rescue_executions(session, later, get_settings(), frozenset())
    session.commit()
    assert moved["executions_requeued"] == 1

    with worker_process(app, "workflows", env=WORKER_ENV):
        done = wait_for(lambda: settled(session), timeout=30)

    assert (done.status, done.attempts) == ("completed", 2)
    # The receiver saw the post twice under one key: its own dedupe makes it once.
    assert len({r.headers["Idempotency-Key"] for r in receiver.received}) == 1
    assert len(receiver.received) == 2


def test_a_task_started_by_a_workflow_that_changes_the_same_job_does_not_fire_it_again(
    session: Any, app: Any, receiver: Webhook
) -> None:
    # Without the loop guard this would fire forever: every change gets its own key, and
    # no rate limit stands in the way.
    _, job_id = completed_upload(
        session,
        app,
        receiver,
        actions=[
            {
                "type": "task",
                "task": "analysis.test_reopen_upload",
                "kwargs": {"upload_id": "{job_id}"},
            }
        ],
        idempotency_key="{change_id}",
        rate_limit={"per_job_status": None},
        test_tasks=("analysis.test_reopen_upload",),
    )

    with worker_process(
        app, "workflows,analysis", env=WORKER_ENV, app_module="tests.system.extra_tasks"
    ):
        rows = wait_for(lambda: statuses(session) if len(statuses(session)) == 2 else None)
        time.sleep(3)  # time enough for a third round, were there one
        assert statuses(session) == rows

    assert rows == [("completed", None), ("skipped", "loop")]
    session.expire_all()
    assert session.get(UploadJob, job_id).status == "completed"


def statuses(session: Any) -> list[tuple[str, str | None]]:
    session.expire_all()
    query = select(WorkflowExecution).order_by(WorkflowExecution.id)
    return [
        (e.status, e.skip_reason and e.skip_reason.partition(":")[0])
        for e in session.scalars(query)
    ]


def test_a_status_change_by_plain_sql_posts_once_within_seconds_signed_with_its_key(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    workflow_id, job_id = completed_upload(session, app, receiver)

    (post,) = wait_for(lambda: receiver.received, timeout=5)

    body = post.json()
    assert (body["workflow_id"], body["job_id"], body["old_status"], body["new_status"]) == (
        workflow_id,
        job_id,
        "processing",
        "completed",
    )
    assert body["job"]["status"] == "completed"
    assert post.headers["Idempotency-Key"] == body["idempotency_key"]
    expected = "sha256=" + hmac.new(SECRET.encode(), post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-Automation-Signature"] == expected
    done = wait_for(lambda: settled(session))
    assert (done.status, done.attempts, done.action_results[0]["status"]) == ("completed", 1, 204)


def test_a_message_delivered_twice_posts_once(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    completed_upload(session, app, receiver)
    done = wait_for(lambda: settled(session))

    again = app.send_task("workflows.execute", args=(done.id,))

    finished = wait_for(lambda: [r.status for r in runs_of(session, again.id) if r.finished_at])
    assert finished == ["duplicate"]
    assert len(receiver.received) == 1


def test_500_then_success_is_retried_with_growing_delays_under_one_key(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    receiver.script.extend([Reply(500), Reply(503)])
    completed_upload(session, app, receiver)

    done = wait_for(lambda: settled(session), timeout=30)

    assert (done.status, done.attempts) == ("completed", 3)
    first, second, third = receiver.received
    assert [r.status for r in receiver.received] == [500, 503, 204]
    assert len({r.headers["Idempotency-Key"] for r in receiver.received}) == 1
    # Backoff from a 1 s base: the first retry waits at least 0.5 s, the second at least 1 s.
    assert second.at - first.at >= 0.5
    assert third.at - second.at >= 1.0


def test_429_waits_at_least_what_retry_after_asks(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    receiver.script.append(Reply(429, {"Retry-After": "3"}))
    completed_upload(session, app, receiver)

    done = wait_for(lambda: settled(session), timeout=30)

    first, second = receiver.received
    assert done.status == "completed"
    assert second.at - first.at >= 3.0


def test_400_fails_at_once_with_the_status_and_what_the_receiver_said(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    receiver.script.append(Reply(400, body=b'{"error": "unknown upload"}'))
    completed_upload(session, app, receiver)

    done = wait_for(lambda: settled(session), timeout=20)

    assert (done.status, done.attempts) == ("failed", 1)
    assert done.error == 'actions[0] (webhook): HTTP 400: {"error": "unknown upload"}'
    assert len(receiver.received) == 1


def test_a_receiver_that_hangs_is_cut_off_and_retried(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    receiver.script.append(Reply(204, hang_seconds=3))
    completed_upload(session, app, receiver)

    done = wait_for(lambda: settled(session), timeout=30)

    assert (done.status, done.attempts) == ("completed", 2)
    assert len(receiver.received) == 2


def test_an_execution_that_keeps_failing_gives_up_after_its_attempts_keeping_the_last_error(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    receiver.status = 502
    completed_upload(session, app, receiver, max_attempts=2)

    done = wait_for(lambda: settled(session), timeout=30)

    assert (done.status, done.attempts) == ("failed", 2)
    assert done.error.startswith("gave up after 2 attempt(s): actions[0] (webhook): HTTP 502")
    assert len(receiver.received) == 2


def test_a_debounced_workflow_posts_once_with_the_latest_change_after_the_quiet_period(
    session: Any, app: Any, receiver: Webhook, workflows_worker: Any
) -> None:
    either_end = {"all": [{"field": "new_status", "op": "in", "value": ["completed", "failed"]}]}
    _, job_id = completed_upload(
        session, app, receiver, conditions=either_end, debounce={"seconds": 2}
    )
    time.sleep(0.5)
    plain_sql("UPDATE upload_jobs SET status = 'failed' WHERE id = %s", job_id)
    last_change = time.monotonic()

    (post,) = wait_for(lambda: receiver.received, timeout=20)
    time.sleep(2)  # a second post, were there one, would have come by now

    assert len(receiver.received) == 1
    assert post.json()["new_status"] == "failed"
    assert post.at - last_change >= 2.0
