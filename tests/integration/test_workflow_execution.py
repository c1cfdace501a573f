"""Running an execution without a worker: the Runner the ``workflows.execute`` task calls,
driven directly. Retries and the webhook conversation through a real worker are in
tests/system/test_workflow_worker.py."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text

from db.models import Notification, UploadJob, WorkflowExecution
from tasks.automation.status import public_task_names
from tasks.workflows import store
from tasks.workflows.execution import Runner
from tasks.workflows.matching import match_changes
from tests import factories as f
from tests.enrichment_support import TOKEN_KEY, cipher
from tests.support import take_message
from worker.settings import get_settings

pytestmark = pytest.mark.committed


def settings(**overrides: Any) -> Any:
    values = {"token_encryption_key": SecretStr(TOKEN_KEY), "webhook_allowed_hosts": "127.0.0.1"}
    return get_settings().model_copy(update=values | overrides)


def runner(app: Any, task_id: str = "message-1", **overrides: Any) -> Runner:
    return Runner(
        app,
        settings(**overrides),
        celery_task_id=task_id,
        hostname="test@host",
        resumable=False,
    )


def pending_execution(session: Any, app: Any, actions: list[dict[str, Any]], **fields: Any) -> int:
    """A workflow with ``actions``, an upload of a new user that completes, matched: the
    pending execution's id."""
    user = f.user(session)
    store.create(
        session,
        {
            "name": "w",
            "trigger": {"type": "job_status_changed", "source": "upload_jobs"},
            "conditions": {"all": [{"field": "new_status", "op": "eq", "value": "completed"}]},
            "actions": actions,
        }
        | fields,
        created_by="test",
        known_tasks=public_task_names(app),
        allowed_hosts={"127.0.0.1"},
        cipher=cipher(),
    )
    job = UploadJob(user_id=user.id, status="processing")
    session.add(job)
    session.flush()
    session.execute(
        text("UPDATE upload_jobs SET status = 'completed' WHERE id = :id"), {"id": job.id}
    )
    match_changes(session, dt.datetime.now(dt.UTC), max_depth=3)
    session.commit()
    return int(session.scalar(select(WorkflowExecution.id)))


def execution(session: Any, execution_id: int) -> WorkflowExecution:
    session.expire_all()
    row = session.get(WorkflowExecution, execution_id)
    assert row is not None
    return row


def test_a_notification_action_writes_one_row_for_the_jobs_user(session: Any, app: Any) -> None:
    execution_id = pending_execution(
        session, app, [{"type": "notification", "title": "Upload {job_id} is {new_status}"}]
    )

    verdict = runner(app).run(execution_id)

    assert verdict.status == "completed"
    row = execution(session, execution_id)
    (note,) = session.scalars(select(Notification)).all()
    assert (note.user_id, note.title) == (row.user_id, f"Upload {row.job_id} is completed")


def test_a_task_action_sends_the_task_with_its_arguments_and_the_workflow_chain(
    session: Any, app: Any
) -> None:
    # A task of a queue the in-process test worker leaves alone, so the message waits.
    action = {
        "type": "task",
        "task": "enrichment.enrich_upload",
        "kwargs": {"upload_id": "{job_id}"},
    }
    execution_id = pending_execution(session, app, [action])

    runner(app).run(execution_id)

    row = execution(session, execution_id)
    headers, body = take_message(app, "enrichment")
    _, kwargs, _ = body
    assert (headers["task"], kwargs) == ("enrichment.enrich_upload", {"upload_id": row.job_id})
    assert json.loads(headers["workflow_origin"]) == {"chain": [row.workflow_id]}


def test_a_template_naming_a_field_the_job_lacks_fails_the_execution_naming_it(
    session: Any, app: Any
) -> None:
    # The title names a column the job had when the workflow was saved... and no longer has.
    execution_id = pending_execution(session, app, [{"type": "notification", "title": "{job.id}"}])
    session.execute(
        text("UPDATE automation_execution_logs SET trigger_data = trigger_data #- '{job,id}'")
    )
    session.commit()

    verdict = runner(app).run(execution_id)

    assert verdict.status == "failed"
    row = execution(session, execution_id)
    assert (
        row.error == "actions[0] (notification): actions[0].title: the change has no field 'job.id'"
    )
    assert row.attempts == 1


def test_a_webhook_whose_host_is_no_longer_allowed_fails_at_once_unsent(
    session: Any, app: Any
) -> None:
    execution_id = pending_execution(
        session, app, [{"type": "webhook", "url": "http://127.0.0.1:9/x"}]
    )

    verdict = runner(app, webhook_allowed_hosts="").run(execution_id)

    assert verdict.status == "failed"
    assert "loopback or reserved" in (execution(session, execution_id).error or "")


def test_an_execution_of_a_disabled_workflow_is_skipped_with_the_reason(
    session: Any, app: Any
) -> None:
    execution_id = pending_execution(session, app, [{"type": "notification", "title": "t"}])
    store.set_active(session, execution(session, execution_id).workflow_id, False)
    session.commit()

    runner(app).run(execution_id)

    row = execution(session, execution_id)
    assert (row.status, row.skip_reason) == ("skipped", "workflow inactive")
    assert session.scalars(select(Notification)).all() == []


def test_a_message_for_an_execution_another_run_holds_does_nothing(session: Any, app: Any) -> None:
    execution_id = pending_execution(session, app, [{"type": "notification", "title": "t"}])
    session.execute(
        text("UPDATE automation_execution_logs SET status = 'processing', celery_task_id = 'other'")
    )
    session.commit()

    verdict = runner(app).run(execution_id)

    assert verdict.status == "not claimed"
    assert session.scalars(select(Notification)).all() == []


def test_a_key_at_its_concurrency_limit_makes_the_next_execution_wait(
    session: Any, app: Any
) -> None:
    concurrency = {"key": "{job.user_id}", "limit": 1}
    first = pending_execution(
        session, app, [{"type": "notification", "title": "t"}], concurrency=concurrency
    )
    # A second execution of the same workflow for the same user, the first still running.
    session.execute(
        text("UPDATE automation_execution_logs SET status = 'processing' WHERE id = :id"),
        {"id": first},
    )
    session.execute(
        text(
            "INSERT INTO automation_execution_logs (workflow_id, change_id, source, job_id,"
            " user_id, new_status, trigger_data, idempotency_key, chain, concurrency_key,"
            " max_attempts) SELECT workflow_id, change_id + 1, source, job_id, user_id,"
            " new_status, trigger_data, 'second', chain, concurrency_key, max_attempts"
            " FROM automation_execution_logs WHERE id = :id RETURNING id"
        ),
        {"id": first},
    )
    session.commit()
    second = int(session.scalar(select(WorkflowExecution.id).where(WorkflowExecution.id != first)))

    waiting = runner(app).run(second)
    session.execute(
        text("UPDATE automation_execution_logs SET status = 'completed' WHERE id = :id"),
        {"id": first},
    )
    session.commit()
    ran = runner(app, task_id="message-2").run(second)

    assert (waiting.status, waiting.retry_in is not None) == ("busy", True)
    assert execution(session, second).attempts == 1
    assert ran.status == "completed"
