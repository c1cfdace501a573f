"""Workflows kept, shown and tried: what the CLI and the API call (neither holds logic).

Helpers never commit: the caller's transaction does.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Base, User, Workflow, WorkflowExecution
from tasks.workflows import conditions, templates, webhooks
from tasks.workflows.definition import DOCUMENT_KEYS, Definition, DefinitionError, parse
from tasks.workflows.matching import trigger_data
from tasks.workflows.sources import SOURCES
from worker.errors import PermanentError
from worker.secrets import SecretCipher


class UnknownWorkflowError(PermanentError):
    pass


def create(
    session: Session,
    data: Any,
    *,
    created_by: str,
    known_tasks: Collection[str],
    allowed_hosts: Collection[str],
    cipher: SecretCipher,
    self_service: bool = False,
) -> tuple[int, str]:
    """Save a new workflow; its id and its webhook signing secret (made here unless the
    file gives one). ``DefinitionError`` names what is wrong with the file.

    ``self_service``: a listener makes it for themselves (a user token): see
    ``check_self_service``."""
    definition = parse(data, known_tasks=known_tasks, allowed_hosts=allowed_hosts)
    if self_service:
        check_self_service(definition)
    if definition.user_id is not None and session.get(User, definition.user_id) is None:
        raise DefinitionError(f"user_id: there is no user {definition.user_id}")
    secret = definition.secret or secrets.token_urlsafe(32)
    workflow = Workflow(
        user_id=definition.user_id,
        name=definition.name,
        source=definition.source,
        on_statuses=definition.on_statuses,
        definition=definition.document,
        active=definition.active,
        secret_encrypted=cipher.encrypt(secret),
        created_by=created_by,
    )
    session.add(workflow)
    session.flush()
    return workflow.id, secret


def check_self_service(definition: Definition) -> None:
    """What a listener may not put in their own workflow: a task (its arguments could name
    anyone's data, which their token may not touch), or a notification to someone else.
    Webhooks are theirs to point anywhere the allow-list permits: the jobs they carry are
    the owner's own."""
    if definition.user_id is None:
        raise DefinitionError("user_id: a user's workflow is that user's; it cannot be null")
    for index, action in enumerate(definition.actions):
        where = f"actions[{index}]"
        if action["type"] == "task":
            raise DefinitionError(f"{where}: a user's own workflow may not run tasks")
        if action["type"] == "notification" and action.get("user_id", "{job.user_id}") not in (
            "{job.user_id}",
            definition.user_id,
            str(definition.user_id),
        ):
            raise DefinitionError(f"{where}.user_id: a user's own workflow notifies only them")


def get(session: Session, workflow_id: int, *, user_id: int | None = None) -> Workflow:
    """The workflow; with ``user_id``, only if it is that user's."""
    workflow = session.get(Workflow, workflow_id)
    if workflow is None or (user_id is not None and workflow.user_id != user_id):
        raise UnknownWorkflowError(f"no workflow {workflow_id}")
    return workflow


def set_active(session: Session, workflow_id: int, active: bool) -> Workflow:
    """Turn the workflow on or off. Off, the status trigger stops recording changes for it
    (unless another active workflow wants them), changes already recorded no longer
    match it, and its pending executions are skipped when they come to run."""
    workflow = get(session, workflow_id)
    workflow.active = active
    workflow.definition = {**workflow.definition, "active": active}
    workflow.updated_at = dt.datetime.now(dt.UTC)
    session.flush()
    return workflow


def describe(session: Session, workflow: Workflow, now: dt.datetime) -> dict[str, Any]:
    """A workflow as the CLI and the API show it, with its last day's executions."""
    counts = dict(
        session.execute(
            select(WorkflowExecution.status, func.count())
            .where(
                WorkflowExecution.workflow_id == workflow.id,
                WorkflowExecution.created_at > now - dt.timedelta(days=1),
            )
            .group_by(WorkflowExecution.status)
        ).all()
    )
    return {
        "id": workflow.id,
        **{key: workflow.definition[key] for key in DOCUMENT_KEYS if key in workflow.definition},
        "on_statuses": workflow.on_statuses,
        "created_by": workflow.created_by,
        "created_at": workflow.created_at.isoformat(),
        "updated_at": workflow.updated_at.isoformat(),
        "executions_24h": counts,
    }


def listing(session: Session, *, user_id: int | None = None) -> list[dict[str, Any]]:
    """Every workflow (with ``user_id``, that user's), by id: what a list shows of each."""
    query = select(Workflow).order_by(Workflow.id)
    if user_id is not None:
        query = query.where(Workflow.user_id == user_id)
    return [
        {
            "id": w.id,
            "name": w.name,
            "user_id": w.user_id,
            "source": w.source,
            "on_statuses": w.on_statuses,
            "active": w.active,
            "actions": [a["type"] for a in w.definition["actions"]],
        }
        for w in session.scalars(query)
    ]


def logs(
    session: Session, workflow_id: int, *, limit: int = 50, before: int | None = None
) -> list[dict[str, Any]]:
    """Its executions, newest first; ``before`` pages on by execution id."""
    query = (
        select(WorkflowExecution)
        .where(WorkflowExecution.workflow_id == workflow_id)
        .order_by(WorkflowExecution.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(WorkflowExecution.id < before)
    return [
        {
            "id": e.id,
            "change_id": e.change_id,
            "job_id": e.job_id,
            "old_status": e.old_status,
            "new_status": e.new_status,
            "status": e.status,
            "skip_reason": e.skip_reason,
            "idempotency_key": e.idempotency_key,
            "attempts": e.attempts,
            "error": e.error,
            "actions": e.action_results,
            "created_at": e.created_at.isoformat(),
            "started_at": e.started_at and e.started_at.isoformat(),
            "finished_at": e.finished_at and e.finished_at.isoformat(),
        }
        for e in session.scalars(query)
    ]


def dry_run(
    session: Session, workflow: Workflow, job_id: int, now: dt.datetime, secret: str
) -> dict[str, Any]:
    """What the workflow would do if job ``job_id`` changed to the status it has now:
    which conditions hold and what each action would send. Nothing is sent or written."""
    source = SOURCES[workflow.source]
    # The source's table from the models' metadata (never a name from the caller), the
    # whole row as JSON: what the status trigger records for a change.
    jobs = Base.metadata.tables[source.table]
    job = session.execute(
        select(func.to_jsonb(jobs.table_valued())).where(jobs.c.id == job_id)
    ).scalar()
    # A user's workflow only ever sees that user's jobs (matching), so it is tried on no
    # other: nor does its owner learn, through it, of another user's job. The same
    # answer as for no job at all.
    if job is None or (workflow.user_id is not None and job.get("user_id") != workflow.user_id):
        raise UnknownWorkflowError(f"no job {job_id} in {source.table}")
    change = {
        "id": None,
        "source": source.table,
        "job_id": job_id,
        "old_status": None,
        "new_status": job["status"],
        "job": job,
        "changed_at": now,
    }
    data = trigger_data(change, workflow.id)
    condition = workflow.definition.get("conditions") or {"all": []}
    context = {**data, "execution_id": None}
    actions = []
    for index, action in enumerate(workflow.definition["actions"]):
        where = f"actions[{index}]"
        try:
            actions.append(_would_send(action, context, where, workflow, secret))
        except (templates.TemplateError, webhooks.WebhookRefusedError) as exc:
            actions.append({"type": action["type"], "error": str(exc)})
    return {
        "workflow_id": workflow.id,
        "change": {k: v for k, v in data.items() if k != "job"} | {"job": job},
        "conditions_hold": conditions.evaluate(condition, data),
        "conditions": conditions.explain(condition, data),
        "actions": actions,
        "sent": False,
    }


def try_on_job(
    session: Session, workflow_id: int, job_id: int, now: dt.datetime, cipher: SecretCipher
) -> dict[str, Any]:
    """``dry_run`` of workflow ``workflow_id`` on job ``job_id``, its webhooks signed with the
    workflow's own secret (so the signature shown is what its receiver checks against)."""
    workflow = get(session, workflow_id)
    return dry_run(session, workflow, job_id, now, cipher.decrypt(workflow.secret_encrypted))


def _would_send(
    action: dict[str, Any], context: dict[str, Any], where: str, workflow: Workflow, secret: str
) -> dict[str, Any]:
    if action["type"] == "webhook":
        key = templates.render(workflow.definition["idempotency_key"], context, "idempotency_key")
        body = webhooks.payload(workflow.id, None, str(key), context)
        return {
            "type": "webhook",
            "url": action["url"],
            "headers": templates.render(action.get("headers") or {}, context, f"{where}.headers"),
            "idempotency_key": key,
            "body": json.loads(body),
            "signature": webhooks.sign(secret, body),
        }
    if action["type"] == "task":
        return {
            "type": "task",
            "task": action["task"],
            "kwargs": templates.render(action.get("kwargs") or {}, context, f"{where}.kwargs"),
        }
    return {
        "type": "notification",
        "user_id": templates.render(action.get("user_id", "{job.user_id}"), context, where),
        "title": templates.render(action["title"], context, f"{where}.title"),
        "body": templates.render(action.get("body"), context, f"{where}.body"),
    }
