"""``automation workflow``: the operators' command line for workflows, against the real
database (each command commits through its own session, so every test here is
``committed``), and the workflows section of ``automation status --json``."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AdminAudit, JobStatusChange, Workflow, WorkflowExecution
from tasks.workflows.matching import match_changes
from tests import factories as f
from tests.enrichment_support import TOKEN_KEY, cipher
from tests.integration.test_ledger import plain_sql
from worker.cli import main
from worker.settings import get_settings

HOOK = "http://127.0.0.1:9/hook"
COMPLETED = {"all": [{"field": "new_status", "op": "eq", "value": "completed"}]}


@pytest.fixture(autouse=True)
def _cli_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI reads the key and the webhook hosts from the environment, as in production."""
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def workflow_file(tmp_path: pathlib.Path, **fields: Any) -> str:
    data = {
        "name": "tell the importer",
        "trigger": {"type": "job_status_changed", "source": "upload_jobs"},
        "conditions": COMPLETED,
        "actions": [{"type": "webhook", "url": HOOK}],
    } | fields
    path = tmp_path / f"workflow-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(data))
    return str(path)


def create(tmp_path: pathlib.Path, **fields: Any) -> int:
    outcome = cli("workflow", "create", "--file", workflow_file(tmp_path, **fields))
    assert outcome.exit_code == 0, outcome.output
    return int(outcome.output.splitlines()[-1])


def upload(user_id: int, status: str = "pending") -> int:
    (job_id,) = plain_sql(
        "INSERT INTO upload_jobs (user_id, status) VALUES (%s, %s) RETURNING id", user_id, status
    )
    return int(job_id)


def set_status(job_id: int, status: str) -> None:
    plain_sql("UPDATE upload_jobs SET status = %s WHERE id = %s", status, job_id)


def committed_user(session: Session) -> int:
    user = f.user(session)
    session.commit()
    return user.id


# -- create -----------------------------------------------------------------------------


@pytest.mark.committed
@pytest.mark.broker_independent
def test_create_prints_the_secret_once_then_the_id_alone_on_the_last_line(
    session: Session, tmp_path: pathlib.Path
) -> None:
    outcome = cli("workflow", "create", "--file", workflow_file(tmp_path))

    assert outcome.exit_code == 0, outcome.output
    *before, last = outcome.output.splitlines()
    stored = session.get(Workflow, int(last))
    assert stored is not None
    assert stored.name == "tell the importer"
    assert stored.created_by.startswith("cli:")
    secret = cipher().decrypt(stored.secret_encrypted)
    assert secret not in stored.secret_encrypted
    [secret_line] = [line for line in before if secret in line]
    assert "shown once" in secret_line
    assert "X-Automation-Signature: sha256=HMAC-SHA256(body)" in secret_line


@pytest.mark.committed
@pytest.mark.broker_independent
def test_create_reads_the_workflow_file_from_standard_input(session: Session) -> None:
    data = {
        "name": "from stdin",
        "trigger": {"type": "job_status_changed", "source": "background_tasks"},
        "actions": [{"type": "webhook", "url": HOOK}],
    }

    outcome = cli("workflow", "create", "--file", "-", input=json.dumps(data))

    assert outcome.exit_code == 0, outcome.output
    stored = session.get(Workflow, int(outcome.output.splitlines()[-1]))
    assert stored is not None
    assert (stored.name, stored.source) == ("from stdin", "background_tasks")


@pytest.mark.committed
@pytest.mark.broker_independent
def test_create_with_the_files_own_secret_does_not_print_it(
    session: Session, tmp_path: pathlib.Path
) -> None:
    outcome = cli(
        "workflow", "create", "--file", workflow_file(tmp_path, secret="the-receivers-own-key")
    )

    assert outcome.exit_code == 0, outcome.output
    assert "the-receivers-own-key" not in outcome.output
    stored = session.get(Workflow, int(outcome.output.splitlines()[-1]))
    assert stored is not None
    assert cipher().decrypt(stored.secret_encrypted) == "the-receivers-own-key"


@pytest.mark.committed
@pytest.mark.broker_independent
def test_a_workflow_file_with_a_bad_part_is_refused_in_one_line_naming_it(
    session: Session, tmp_path: pathlib.Path
) -> None:
    bad = {"all": [{"field": "job.usr_id", "op": "eq", "value": 1}]}

    outcome = cli("workflow", "create", "--file", workflow_file(tmp_path, conditions=bad))

    assert outcome.exit_code == 1
    [line] = outcome.output.strip().splitlines()
    assert line.startswith("Error: workflow file refused: conditions.all[0].field: 'job.usr_id'")
    assert session.scalars(select(Workflow)).all() == []


@pytest.mark.committed
@pytest.mark.broker_independent
def test_a_webhook_to_a_host_not_allowed_is_refused_naming_the_action(
    session: Session, tmp_path: pathlib.Path
) -> None:
    actions = [
        {"type": "task", "task": "automation.ping"},
        {"type": "webhook", "url": "http://10.0.0.8/"},
    ]

    outcome = cli("workflow", "create", "--file", workflow_file(tmp_path, actions=actions))

    assert outcome.exit_code == 1
    [line] = outcome.output.strip().splitlines()
    assert line.startswith("Error: workflow file refused: actions[1].url: host 10.0.0.8")
    assert session.scalars(select(Workflow)).all() == []


@pytest.mark.broker_independent
def test_a_file_that_is_not_json_is_refused_in_one_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "w.json"
    path.write_text("{name: 'not json'}")

    outcome = cli("workflow", "create", "--file", str(path))

    assert outcome.exit_code == 1
    [line] = outcome.output.strip().splitlines()
    assert line.startswith(f"Error: {path} is not JSON: Expecting property name")


@pytest.mark.broker_independent
def test_a_file_that_cannot_be_read_is_refused_in_one_line(tmp_path: pathlib.Path) -> None:
    outcome = cli("workflow", "create", "--file", str(tmp_path / "missing.json"))

    assert outcome.exit_code == 1
    assert outcome.output.strip() == (
        f"Error: cannot read {tmp_path / 'missing.json'}: No such file or directory"
    )


@pytest.mark.committed
@pytest.mark.broker_independent
def test_creating_enabling_and_disabling_are_kept_in_the_audit_log(
    session: Session, tmp_path: pathlib.Path
) -> None:
    workflow_id = create(tmp_path)

    cli("workflow", "disable", str(workflow_id))
    cli("workflow", "enable", str(workflow_id))

    audit = session.scalars(select(AdminAudit).order_by(AdminAudit.id)).all()
    assert [(a.action, a.target) for a in audit] == [
        ("workflow.create", f"workflow:{workflow_id}"),
        ("workflow.disable", f"workflow:{workflow_id}"),
        ("workflow.enable", f"workflow:{workflow_id}"),
    ]
    assert all(a.actor.startswith("cli:") for a in audit)
    assert "secret" not in json.dumps([a.detail for a in audit])


# -- list and show ------------------------------------------------------------------------


@pytest.mark.committed
@pytest.mark.broker_independent
def test_list_shows_each_workflow_with_its_state_source_and_actions(
    tmp_path: pathlib.Path,
) -> None:
    first = create(tmp_path)
    second = create(
        tmp_path,
        name="ping when a task fails",
        trigger={"type": "job_status_changed", "source": "background_tasks"},
        conditions={"all": [{"field": "new_status", "op": "eq", "value": "failed"}]},
        actions=[{"type": "task", "task": "automation.ping"}],
        active=False,
    )

    text = cli("workflow", "list").output
    rows = json.loads(cli("workflow", "list", "--json").output)

    assert [(r["id"], r["active"], r["source"], r["actions"]) for r in rows] == [
        (first, True, "upload_jobs", ["webhook"]),
        (second, False, "background_tasks", ["task"]),
    ]
    lines = text.splitlines()
    assert lines[1].split()[:5] == [str(first), "active", "upload_jobs", "everyone", "completed"]
    assert lines[2].split()[:5] == [
        str(second),
        "disabled",
        "background_tasks",
        "everyone",
        "failed",
    ]
    assert lines[2].endswith("ping when a task fails [task]")


@pytest.mark.committed
@pytest.mark.broker_independent
def test_show_gives_the_definition_with_its_defaults_and_never_the_secret(
    tmp_path: pathlib.Path,
) -> None:
    workflow_id = create(tmp_path, secret="never-shown-to-anyone")

    text = cli("workflow", "show", str(workflow_id))
    view = json.loads(cli("workflow", "show", str(workflow_id), "--json").output)

    assert text.exit_code == 0, text.output
    assert view["id"] == workflow_id
    assert view["rate_limit"] == {"per_job_status": "1/h", "per_workflow": None}
    assert view["on_statuses"] == ["completed"]
    assert view["executions_24h"] == {}
    assert "secret" not in view
    assert "never-shown" not in text.output
    assert text.output.startswith(
        f"workflow {workflow_id}: tell the importer (active)\n"
        "  watches upload_jobs (every user's jobs) changing to completed\n"
    )


@pytest.mark.broker_independent
def test_show_of_an_unknown_workflow_fails_in_one_line() -> None:
    outcome = cli("workflow", "show", "424242")

    assert outcome.exit_code == 1
    assert outcome.output.strip() == "Error: no workflow 424242"


# -- enable and disable --------------------------------------------------------------------


@pytest.mark.committed
@pytest.mark.broker_independent
def test_a_disabled_workflows_changes_are_not_recorded_until_it_is_enabled_again(
    session: Session, tmp_path: pathlib.Path
) -> None:
    user_id = committed_user(session)
    workflow_id = create(tmp_path)
    while_disabled, after = upload(user_id), upload(user_id)

    disabled = cli("workflow", "disable", str(workflow_id))
    set_status(while_disabled, "completed")
    enabled = cli("workflow", "enable", str(workflow_id))
    set_status(after, "completed")

    assert disabled.exit_code == 0, disabled.output
    assert disabled.output.startswith(f"workflow {workflow_id} (tell the importer): disabled")
    assert enabled.exit_code == 0, enabled.output
    recorded = session.scalars(select(JobStatusChange)).all()
    assert [(c.job_id, c.new_status) for c in recorded] == [(after, "completed")]
    stored = session.get(Workflow, workflow_id)
    assert stored is not None
    assert stored.active is True
    assert stored.definition["active"] is True


@pytest.mark.broker_independent
def test_enabling_an_unknown_workflow_fails_in_one_line() -> None:
    outcome = cli("workflow", "enable", "424242")

    assert outcome.exit_code == 1
    assert outcome.output.strip() == "Error: no workflow 424242"


# -- test (the dry run) -------------------------------------------------------------------


@pytest.mark.committed
@pytest.mark.broker_independent
def test_test_shows_the_conditions_and_what_each_action_would_send_and_writes_nothing(
    session: Session, tmp_path: pathlib.Path
) -> None:
    user_id = committed_user(session)
    workflow_id = create(
        tmp_path,
        actions=[
            {"type": "webhook", "url": HOOK, "headers": {"X-Job": "{job_id}"}},
            {"type": "task", "task": "automation.ping", "kwargs": {"who": "{job.user_id}"}},
            {"type": "notification", "title": "Upload {job_id} is {new_status}"},
        ],
    )
    job_id = upload(user_id, "completed")
    audit_before = session.scalar(select(AdminAudit.id).order_by(AdminAudit.id.desc()))

    outcome = cli("workflow", "test", str(workflow_id), "--job", str(job_id))

    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert lines[0].startswith(f"DRY RUN of workflow {workflow_id} on upload_jobs job {job_id}")
    assert lines[0].endswith("nothing was sent, queued or written")
    assert lines[1] == "conditions: hold: it would run (1)"
    assert lines[2] == (
        'yes  conditions.all[0]: new_status eq "completed" (it is "completed")'.join(["  ", ""])
    )
    assert f"  1. webhook: POST {HOOK}" in lines
    assert f"       X-Job: {job_id}" in lines
    assert f'  2. task: automation.ping {{"who": {user_id}}}' in lines
    assert f"  3. notification to user {user_id}: 'Upload {job_id} is completed'" in lines
    session.expire_all()
    assert session.scalars(select(WorkflowExecution)).all() == []
    assert session.scalar(select(AdminAudit.id).order_by(AdminAudit.id.desc())) == audit_before


@pytest.mark.committed
@pytest.mark.broker_independent
def test_test_says_when_the_conditions_do_not_hold(
    session: Session, tmp_path: pathlib.Path
) -> None:
    user_id = committed_user(session)
    workflow_id = create(tmp_path)
    job_id = upload(user_id, "processing")

    outcome = cli("workflow", "test", str(workflow_id), "--job", str(job_id))

    assert outcome.exit_code == 0, outcome.output
    assert "conditions: do not hold: it would be skipped (1)" in outcome.output
    assert '  NO   conditions.all[0]: new_status eq "completed" (it is "processing")' in (
        outcome.output
    )


@pytest.mark.committed
@pytest.mark.broker_independent
def test_test_json_signs_the_webhook_body_with_the_workflows_secret(
    session: Session, tmp_path: pathlib.Path
) -> None:
    user_id = committed_user(session)
    workflow_id = create(tmp_path, secret="shared-with-the-receiver")
    job_id = upload(user_id, "completed")

    outcome = cli("workflow", "test", str(workflow_id), "--job", str(job_id), "--json")

    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output)
    assert report["sent"] is False
    [webhook] = report["actions"]
    body = json.dumps(webhook["body"], sort_keys=True, separators=(",", ":")).encode()
    expected = hmac.new(b"shared-with-the-receiver", body, hashlib.sha256).hexdigest()
    assert webhook["signature"] == f"sha256={expected}"


@pytest.mark.committed
@pytest.mark.broker_independent
def test_test_on_a_job_that_does_not_exist_fails_in_one_line(tmp_path: pathlib.Path) -> None:
    workflow_id = create(tmp_path)

    outcome = cli("workflow", "test", str(workflow_id), "--job", "424242")

    assert outcome.exit_code == 1
    assert outcome.output.strip() == "Error: no job 424242 in upload_jobs"


# -- logs ---------------------------------------------------------------------------------


def matched_executions(
    session: Session, tmp_path: pathlib.Path
) -> tuple[int, list[int], list[int]]:
    """A workflow with three executions made by the matcher: two ran, the last a skip."""
    user_id = committed_user(session)
    workflow_id = create(tmp_path)
    first, second = upload(user_id), upload(user_id)
    for job_id in (first, second):
        set_status(job_id, "completed")
    set_status(first, "processing")
    set_status(first, "completed")  # the same job and status within the hour: a skip
    match_changes(session, dt.datetime.now(dt.UTC), max_depth=3)
    session.commit()
    ids = list(session.scalars(select(WorkflowExecution.id).order_by(WorkflowExecution.id)))
    return workflow_id, ids, [first, second, first]


@pytest.mark.committed
@pytest.mark.broker_independent
def test_logs_shows_the_executions_newest_first_with_the_reason_of_a_skip(
    session: Session, tmp_path: pathlib.Path
) -> None:
    workflow_id, ids, jobs = matched_executions(session, tmp_path)

    outcome = cli("workflow", "logs", str(workflow_id))

    assert outcome.exit_code == 0, outcome.output
    header, *rows = outcome.output.splitlines()
    assert header.split()[:7] == ["ID", "CREATED", "JOB", "CHANGE", "STATUS", "ATTEMPTS", "REASON"]
    assert [row.split()[0] for row in rows] == [str(i) for i in reversed(ids)]
    newest = rows[0].split()
    assert newest[2:6] == [str(jobs[2]), "processing->completed", "skipped", "0"]
    # The key's date part is left out: a run at midnight would see tomorrow's.
    assert f"duplicate: idempotency key {jobs[2]}-completed-{workflow_id}-" in rows[0]
    assert rows[2].split()[2:6] == [str(jobs[0]), "pending->completed", "pending", "0"]


@pytest.mark.committed
@pytest.mark.broker_independent
def test_logs_pages_on_with_before_and_limit(session: Session, tmp_path: pathlib.Path) -> None:
    workflow_id, ids, _ = matched_executions(session, tmp_path)

    page = json.loads(
        cli(
            "workflow", "logs", str(workflow_id), "--limit", "1", "--before", str(ids[2]), "--json"
        ).output
    )
    text = cli("workflow", "logs", str(workflow_id), "--limit", "1").output

    assert [row["id"] for row in page] == [ids[1]]
    assert text.splitlines()[-1] == f"older: --before {ids[2]}"


# -- status -------------------------------------------------------------------------------


@pytest.mark.committed
def test_status_json_has_the_workflows_section_with_its_counts(
    session: Session, tmp_path: pathlib.Path
) -> None:
    active = create(tmp_path)
    create(tmp_path, active=False)
    now = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)
    f.execution(session, active, "pending", now - 2 * hour, run_after=now - 2 * hour)
    f.execution(session, active, "completed", now - hour)
    f.execution(session, active, "completed", now - hour)
    f.execution(session, active, "failed", now - 3 * hour, error="receiver said 500")
    f.execution(session, active, "skipped", now - 30 * hour, skip_reason="duplicate")
    f.status_change(session, 7, "completed", now - dt.timedelta(minutes=3))
    session.commit()

    outcome = cli("status", "--json")

    assert outcome.exit_code == 0, outcome.output
    section = json.loads(outcome.output)["workflows"]
    assert section["executions_24h"] == {
        "pending": 1,
        "processing": 0,
        "completed": 2,
        "failed": 1,
        "skipped": 0,
    }
    assert section["oldest_pending"] == (now - 2 * hour).isoformat()
    assert 2 * 3600 <= section["oldest_pending_age_seconds"] < 2 * 3600 + 60
    assert section["unmatched_changes"] == 1
    assert section["oldest_unmatched"] == (now - dt.timedelta(minutes=3)).isoformat()
    assert section["workflows"] == {"active": 1, "inactive": 1}
