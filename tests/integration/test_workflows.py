"""Event workflows without a worker: the status trigger, matching, limits, the loop guard,
the dry run. What needs a worker (the dispatcher, webhooks, retries) is in
tests/system/test_workflow_worker.py."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select, text

from db.models import JobStatusChange, UploadJob, Workflow, WorkflowExecution
from tasks.automation.status import public_task_names
from tasks.workflows import store
from tasks.workflows.definition import DefinitionError
from tasks.workflows.matching import match_changes
from tasks.workflows.rescue import republish_after_broker_reset
from tests import factories as f
from tests.enrichment_support import cipher
from tests.integration.test_ledger import plain_sql

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
HOOK = "http://127.0.0.1:9/hook"
COMPLETED = {"all": [{"field": "new_status", "op": "eq", "value": "completed"}]}


def workflow(session: Any, app: Any, **fields: Any) -> int:
    data = {
        "name": "tell the importer",
        "trigger": {"type": "job_status_changed", "source": "upload_jobs"},
        "conditions": COMPLETED,
        "actions": [{"type": "webhook", "url": HOOK}],
    } | fields
    workflow_id, _ = store.create(
        session,
        data,
        created_by="test",
        known_tasks=public_task_names(app),
        allowed_hosts={"127.0.0.1"},
        cipher=cipher(),
    )
    return workflow_id


def upload(session: Any, user_id: int, status: str = "pending") -> UploadJob:
    job = UploadJob(user_id=user_id, status=status)
    session.add(job)
    session.flush()
    return job


def set_status(session: Any, job: UploadJob, *statuses: str) -> None:
    for status in statuses:
        session.execute(
            text("UPDATE upload_jobs SET status = :s WHERE id = :id"), {"s": status, "id": job.id}
        )


def changes(session: Any) -> list[tuple[int, str | None, str]]:
    query = select(JobStatusChange).order_by(JobStatusChange.id)
    return [(c.job_id, c.old_status, c.new_status) for c in session.scalars(query)]


def executions(session: Any) -> list[tuple[int, str, str | None]]:
    session.expire_all()
    query = select(WorkflowExecution).order_by(WorkflowExecution.id)
    return [
        (e.job_id, e.status, e.skip_reason and e.skip_reason.partition(":")[0])
        for e in session.scalars(query)
    ]


def match(session: Any, max_depth: int = 3) -> Any:
    return match_changes(session, NOW, max_depth=max_depth)


@pytest.mark.committed
def test_a_status_change_made_by_plain_sql_is_recorded_with_the_job_and_its_old_status(
    session: Any, app: Any
) -> None:
    user = f.user(session)
    workflow(session, app)
    session.commit()
    (job_id,) = plain_sql(
        "INSERT INTO upload_jobs (user_id, status) VALUES (%s, 'processing') RETURNING id", user.id
    )

    plain_sql("UPDATE upload_jobs SET status = 'completed' WHERE id = %s", job_id)

    recorded = session.scalars(select(JobStatusChange).order_by(JobStatusChange.id)).all()
    # The insert is not recorded: the workflow's conditions can only hold for 'completed'.
    assert [(c.job_id, c.old_status, c.new_status, c.user_id) for c in recorded] == [
        (job_id, "processing", "completed", user.id)
    ]
    assert recorded[0].job["status"] == "completed"
    assert recorded[0].matched_at is None


def test_a_change_no_active_workflow_watches_is_not_recorded(session: Any, app: Any) -> None:
    user = f.user(session)
    inactive = workflow(session, app, active=False)
    job = upload(session, user.id)

    set_status(session, job, "processing", "completed")

    assert inactive
    assert changes(session) == []


def test_a_change_that_meets_a_workflow_becomes_one_pending_execution(
    session: Any, app: Any
) -> None:
    user = f.user(session)
    workflow_id = workflow(session, app)
    job = upload(session, user.id)
    set_status(session, job, "completed")

    matched = match(session)

    assert (matched.changes, matched.executions) == (1, 1)
    (execution,) = session.scalars(select(WorkflowExecution)).all()
    assert (execution.workflow_id, execution.status, execution.old_status) == (
        workflow_id,
        "pending",
        "pending",
    )
    assert execution.idempotency_key == f"{job.id}-completed-{workflow_id}-{NOW.date()}"
    assert execution.trigger_data["job"]["user_id"] == user.id


def test_a_change_matched_again_makes_no_second_execution(session: Any, app: Any) -> None:
    user = f.user(session)
    workflow(session, app)
    set_status(session, upload(session, user.id), "completed")
    match(session)

    # A replay: the dispatcher died after writing the executions, before marking.
    session.execute(text("UPDATE job_status_changes SET matched_at = NULL"))
    match(session)

    assert [status for _, status, _ in executions(session)] == ["pending"]


def test_a_status_flapping_five_times_runs_once_and_logs_four_skips(session: Any, app: Any) -> None:
    user = f.user(session)
    workflow(session, app)
    job = upload(session, user.id)
    for _ in range(5):
        set_status(session, job, "completed", "processing")

    match(session)

    assert executions(session) == [
        (job.id, "pending", None),
        *[(job.id, "skipped", "duplicate")] * 4,
    ]


def test_the_per_job_status_limit_holds_even_with_a_key_that_differs(
    session: Any, app: Any
) -> None:
    user = f.user(session)
    workflow(session, app, idempotency_key="{change_id}-{job_id}")
    job = upload(session, user.id)
    set_status(session, job, "completed", "processing", "completed")

    match(session)

    assert executions(session) == [(job.id, "pending", None), (job.id, "skipped", "rate limited")]


def test_conditions_that_do_not_hold_are_logged_as_a_skip(session: Any, app: Any) -> None:
    user = f.user(session)
    # Completed uploads of user 0 only: never this one.
    conditions = {"all": [*COMPLETED["all"], {"field": "job.user_id", "op": "eq", "value": 0}]}
    workflow(session, app, conditions=conditions)
    set_status(session, upload(session, user.id), "completed")

    match(session)

    assert [reason for _, _, reason in executions(session)] == ["conditions false"]


def test_a_users_workflow_sees_only_that_users_jobs(session: Any, app: Any) -> None:
    owner, other = f.user(session), f.user(session)
    workflow(session, app, user_id=owner.id)
    mine, theirs = upload(session, owner.id), upload(session, other.id)
    set_status(session, mine, "completed")
    set_status(session, theirs, "completed")

    match(session)

    assert [job_id for job_id, _, _ in executions(session)] == [mine.id]


def test_the_per_workflow_limit_skips_what_is_over_it(session: Any, app: Any) -> None:
    user = f.user(session)
    workflow(session, app, rate_limit={"per_workflow": "2/m"})
    jobs = [upload(session, user.id) for _ in range(3)]
    for job in jobs:
        set_status(session, job, "completed")

    match(session)

    assert [(status, reason) for _, status, reason in executions(session)] == [
        ("pending", None),
        ("pending", None),
        ("skipped", "rate limited"),
    ]


def test_a_change_caused_by_the_workflows_own_action_is_refused_as_a_loop(
    session: Any, app: Any
) -> None:
    user = f.user(session)
    workflow_id = workflow(session, app)
    job = upload(session, user.id)
    # What a task sent by this workflow's action does when it changes a job.
    origin = json.dumps({"chain": [workflow_id]})
    session.execute(text("SELECT set_config('automation.origin', :o, true)"), {"o": origin})
    set_status(session, job, "completed")

    match(session)

    (execution,) = session.scalars(select(WorkflowExecution)).all()
    assert execution.status == "skipped"
    assert execution.skip_reason.startswith("loop: this change was caused by this workflow")


def test_a_chain_of_workflows_deeper_than_the_limit_is_refused(session: Any, app: Any) -> None:
    user = f.user(session)
    workflow(session, app)
    job = upload(session, user.id)
    origin = json.dumps({"chain": [101, 102]})  # two other workflows led here
    session.execute(text("SELECT set_config('automation.origin', :o, true)"), {"o": origin})
    set_status(session, job, "completed")

    match(session, max_depth=2)

    (execution,) = session.scalars(select(WorkflowExecution)).all()
    assert execution.skip_reason.startswith("loop: the change comes through 2 workflows")
    assert execution.chain == [101, 102, execution.workflow_id]


def test_debounce_runs_only_the_latest_change_for_a_key(session: Any, app: Any) -> None:
    user = f.user(session)
    any_end = {"all": [{"field": "new_status", "op": "in", "value": ["completed", "failed"]}]}
    workflow(session, app, conditions=any_end, debounce={"seconds": 30})
    job = upload(session, user.id)
    set_status(session, job, "completed", "failed")
    match(session)
    set_status(session, job, "completed")

    match(session)

    session.expire_all()
    rows = session.scalars(select(WorkflowExecution).order_by(WorkflowExecution.id)).all()
    assert [(r.new_status, r.status) for r in rows] == [
        ("completed", "skipped"),
        ("failed", "skipped"),
        ("completed", "pending"),
    ]
    assert all(r.skip_reason.startswith("debounced: superseded") for r in rows[:2])
    assert rows[2].run_after == NOW + dt.timedelta(seconds=30)


def test_a_workflow_file_naming_an_unknown_column_is_refused_naming_it(
    session: Any, app: Any
) -> None:
    bad = {"all": [{"field": "job.usr_id", "op": "eq", "value": 1}]}

    with pytest.raises(DefinitionError, match=r"conditions\.all\[0\]\.field: 'job\.usr_id'"):
        workflow(session, app, conditions=bad)


def test_a_users_dry_run_on_another_users_job_finds_no_job(session: Any, app: Any) -> None:
    owner, other = f.user(session), f.user(session)
    workflow_id = workflow(session, app, user_id=owner.id)
    theirs = upload(session, other.id, status="completed")

    with pytest.raises(store.UnknownWorkflowError, match=f"no job {theirs.id}"):
        store.dry_run(session, store.get(session, workflow_id), theirs.id, NOW, "0" * 16)


def test_a_workflow_for_a_user_that_does_not_exist_is_refused(session: Any, app: Any) -> None:
    with pytest.raises(DefinitionError, match="user_id: there is no user 999999"):
        workflow(session, app, user_id=999_999)


def test_the_secret_is_stored_encrypted(session: Any, app: Any) -> None:
    workflow_id = workflow(session, app, secret="s3cret-of-the-receiver")

    stored = session.get(Workflow, workflow_id).secret_encrypted

    assert "s3cret" not in stored
    assert cipher().decrypt(stored) == "s3cret-of-the-receiver"


def test_the_dry_run_says_which_conditions_hold_and_what_would_be_sent(
    session: Any, app: Any
) -> None:
    user = f.user(session)
    workflow_id = workflow(
        session,
        app,
        actions=[
            {"type": "webhook", "url": HOOK},
            {
                "type": "task",
                "task": "listening.aggregate_user",
                "kwargs": {"user_id": "{job.user_id}"},
            },
        ],
    )
    job = upload(session, user.id, status="completed")

    report = store.dry_run(
        session, store.get(session, workflow_id), job.id, NOW, secret="0123456789abcdef"
    )

    assert report["conditions_hold"] is True
    assert [c["holds"] for c in report["conditions"]] == [True]
    assert report["actions"][0]["body"]["job_id"] == job.id
    assert report["actions"][1] == {
        "type": "task",
        "task": "listening.aggregate_user",
        "kwargs": {"user_id": user.id},
    }
    assert report["sent"] is False
    assert session.scalars(select(WorkflowExecution)).all() == []


def test_a_webhook_url_that_may_not_be_posted_to_is_a_definition_error_naming_it(
    session: Any, app: Any
) -> None:
    with pytest.raises(DefinitionError, match=r"actions\[0\]\.url: 'ftp://host/x' is not"):
        workflow(session, app, actions=[{"type": "webhook", "url": "ftp://host/x"}])


def test_disabling_a_workflow_turns_it_off_in_its_row_and_in_its_definition(
    session: Any, app: Any
) -> None:
    workflow_id = workflow(session, app)

    disabled = store.set_active(session, workflow_id, False)

    assert disabled.active is False
    assert disabled.definition["active"] is False


def test_after_redis_lost_its_data_executions_published_or_claimed_before_get_fresh_messages(
    session: Any, app: Any
) -> None:
    workflow_id = workflow(session, app)
    reset_at = NOW
    waiting = f.execution(
        session, workflow_id, "pending", NOW, enqueued_at=reset_at - dt.timedelta(minutes=1)
    )
    running = f.execution(
        session, workflow_id, "processing", NOW, started_at=reset_at - dt.timedelta(seconds=5)
    )
    later = f.execution(
        session, workflow_id, "pending", NOW, enqueued_at=reset_at + dt.timedelta(seconds=1)
    )

    republished = republish_after_broker_reset(session, reset_at)

    session.expire_all()
    assert republished == 2
    assert [(r.status, r.enqueued_at) for r in (waiting, running)] == [("pending", None)] * 2
    assert later.enqueued_at is not None  # published after the reset: its message is there


def test_a_workflow_broken_by_hand_in_the_database_is_skipped_and_the_rest_still_match(
    session: Any, app: Any
) -> None:
    user = f.user(session)
    broken, sound = workflow(session, app), workflow(session, app)
    session.execute(
        text("UPDATE automation_workflows SET definition = '\"oops\"' WHERE id = :id"),
        {"id": broken},
    )
    set_status(session, upload(session, user.id), "completed")

    match(session)

    session.expire_all()
    rows = {e.workflow_id: e for e in session.scalars(select(WorkflowExecution))}
    assert rows[sound].status == "pending"
    assert rows[broken].status == "skipped"
    assert rows[broken].skip_reason.startswith("invalid workflow definition: AttributeError")
