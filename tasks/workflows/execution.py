"""Running one execution: claim it, run its actions in order, settle it.

The claim (``pending`` -> ``processing``, the attempt counted) commits before any action,
so the rescuer sees who holds it. Each action's outcome commits as soon as it is known, so
a retry resumes at the first action not yet done: a webhook that answered 200 is not
posted again because a later action failed, and the receiver sees the same
``Idempotency-Key`` on every post it does get.

Failures: a transient one (connection error, timeout, 5xx, 429) releases the execution
with a backoff (exponential with jitter, at least what Retry-After asked) until
``max_attempts`` is spent, then ``failed`` with the last error; anything else (4xx, a
template naming a missing field, a refused URL, an unknown task) fails at once. A worker
killed mid-run leaves the row ``processing``: the redelivered message resumes it, or the
rescuer (``worker.recovery``) puts it back once the worker's lease has expired.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from celery import Celery
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from db.models import Notification
from db.queries import queries
from db.session import session_scope
from tasks.workflows import templates, webhooks
from worker.arguments import validate_arguments
from worker.backoff import backoff
from worker.errors import PermanentError
from worker.origin import ORIGIN_HEADER
from worker.secrets import SecretCipher
from worker.settings import Settings

log = logging.getLogger(__name__)
SQL = queries("tasks.workflows", "workflows")
_TASK_IDS = uuid.UUID("0b6f3f5e-6c1e-4d53-9d0c-6a1f1d2c7a10")  # namespace of actions' task ids


@dataclass(frozen=True)
class Verdict:
    """What became of a run. ``retry_in``: send the message again after this many seconds."""

    status: str  # completed, failed, skipped, retry, busy, not claimed
    detail: str = ""
    retry_in: float | None = None


@dataclass(frozen=True)
class Claim:
    execution_id: int
    attempt: int
    max_attempts: int
    workflow_id: int
    trigger_data: dict[str, Any]
    idempotency_key: str
    chain: list[int]
    results: list[dict[str, Any]]
    workflow: Any  # its workflow's row (definition, active, secret), None if deleted


@dataclass(frozen=True)
class ActionOutcome:
    ok: bool
    transient: bool
    detail: str
    status: int | None = None
    retry_after: float | None = None


class Runner:
    """Runs executions for one message: its id, its worker, whether it came before."""

    def __init__(
        self,
        app: Celery,
        settings: Settings,
        *,
        celery_task_id: str,
        hostname: str,
        resumable: bool,
        http: httpx.Client | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.app = app
        self.settings = settings
        self.celery_task_id = celery_task_id
        self.hostname = hostname
        self.resumable = resumable
        self.http = http
        self.draw = draw

    def run(self, execution_id: int) -> Verdict:
        claim = self._claim(execution_id)
        if isinstance(claim, Verdict):
            return claim
        workflow = claim.workflow
        results = list(claim.results)
        if workflow is None or not workflow.active:
            done = sum(1 for r in results if r.get("ok"))
            return self._settle(
                claim,
                "skipped",
                results,
                skip_reason="workflow inactive"
                + (f" (disabled after {done} action(s) had run)" if done else ""),
            )
        actions: list[dict[str, Any]] = workflow.definition["actions"]
        context = {**claim.trigger_data, "execution_id": claim.execution_id}
        secret: str | None = None
        for index, action in enumerate(actions):
            if index < len(results) and results[index].get("ok"):
                continue
            if action["type"] == "webhook" and secret is None:
                secret = SecretCipher.from_settings(self.settings).decrypt(
                    workflow.secret_encrypted
                )
            outcome = self._act(claim, index, action, context, secret or "")
            entry = {
                "type": action["type"],
                "ok": outcome.ok,
                "status": outcome.status,
                "detail": outcome.detail[: webhooks.EXCERPT_BYTES],
                "attempt": claim.attempt,
                "at": dt.datetime.now(dt.UTC).isoformat(),
            }
            results = [*results[:index], entry, *results[index + 1 :]]
            if outcome.ok:
                if index < len(actions) - 1:  # the last one's is written with the settle
                    self._record(claim, results)
                continue
            error = f"actions[{index}] ({action['type']}): {outcome.detail}"[:2000]
            if outcome.transient and claim.attempt < claim.max_attempts:
                delay = max(
                    backoff(
                        claim.attempt,
                        self.settings.workflow_retry_base_seconds,
                        self.settings.workflow_retry_cap_seconds,
                        self.draw(),
                    ),
                    min(outcome.retry_after or 0.0, self.settings.workflow_retry_cap_seconds),
                )
                return self._release(claim, results, error, delay)
            if outcome.transient:
                error = f"gave up after {claim.attempt} attempt(s): {error}"
            return self._settle(claim, "failed", results, error=error)
        return self._settle(claim, "completed", results)

    # -- the claim and the writes that name it ------------------------------------------

    def _claim(self, execution_id: int) -> Claim | Verdict:
        with session_scope() as session:
            state = session.execute(SQL["execution_state"], {"id": execution_id}).first()
            if state is None:
                return Verdict("not claimed", f"execution {execution_id} does not exist")
            limit = state.concurrency_limit if state.concurrency_key is not None else None
            if limit is not None:
                session.execute(
                    SQL["lock_concurrency_key"],
                    {"workflow_id": state.workflow_id, "key": state.concurrency_key},
                )
            row = session.execute(
                SQL["claim"],
                {
                    "id": execution_id,
                    "celery_task_id": self.celery_task_id,
                    "worker_host": self.hostname,
                    "resumable": self.resumable,
                    "limit": limit,
                },
            ).first()
            # Read in the claim's transaction: one round of BEGIN and COMMIT fewer.
            workflow = (
                None
                if row is None
                else session.execute(SQL["workflow_for_run"], {"id": row.workflow_id}).first()
            )
        if row is not None:
            return Claim(
                execution_id,
                row.attempts,
                row.max_attempts,
                row.workflow_id,
                row.trigger_data,
                row.idempotency_key,
                list(row.chain),
                list(row.action_results or []),
                workflow,
            )
        if state.status == "pending" and state.run_after > state.now:
            # Early (a debounce's quiet period or a backoff not over, a clock ahead of the
            # database's): wait the rest rather than leave the row without a message.
            early = (state.run_after - state.now).total_seconds()
            return Verdict("busy", f"due in {early:.1f} s", retry_in=early + 0.05)
        if state.status == "pending" and limit is not None:
            # As many run for its key as the workflow allows: try again shortly.
            return Verdict("busy", f"concurrency limit {limit} reached", retry_in=1.0 + self.draw())
        return Verdict("not claimed", f"execution {execution_id} is {state.status}")

    def _write(
        self, statement: str, claim: Claim, results: list[dict[str, Any]], **values: Any
    ) -> bool:
        """Run one of the writes that name the claim (the run's message id and attempt);
        False when the execution was taken from this run (rescued as orphaned)."""
        params = {
            "id": claim.execution_id,
            "celery_task_id": self.celery_task_id,
            "attempt": claim.attempt,
            "results": json.dumps(results),
            **values,
        }
        with session_scope() as session:
            return session.execute(SQL[statement], params).first() is not None

    def _record(self, claim: Claim, results: list[dict[str, Any]]) -> None:
        self._write("record_action", claim, results)

    def _settle(
        self,
        claim: Claim,
        status: str,
        results: list[dict[str, Any]],
        *,
        error: str | None = None,
        skip_reason: str | None = None,
    ) -> Verdict:
        if not self._write(
            "settle", claim, results, status=status, error=error, skip_reason=skip_reason
        ):
            return Verdict("not claimed", "the execution was taken from this run")
        return Verdict(status, error or skip_reason or "")

    def _release(
        self, claim: Claim, results: list[dict[str, Any]], error: str, delay: float
    ) -> Verdict:
        if not self._write("release_for_retry", claim, results, error=error, delay=delay):
            return Verdict("not claimed", "the execution was taken from this run")
        return Verdict("retry", error, retry_in=delay)

    # -- the actions -------------------------------------------------------------------

    def _act(
        self,
        claim: Claim,
        index: int,
        action: Mapping[str, Any],
        context: Mapping[str, Any],
        secret: str,
    ) -> ActionOutcome:
        where = f"actions[{index}]"
        try:
            if action["type"] == "webhook":
                return self._webhook(claim, action, context, secret, where)
            if action["type"] == "task":
                return self._task(claim, index, action, context, where)
            return self._notify(claim, index, action, context, where)
        except (templates.TemplateError, webhooks.WebhookRefusedError, PermanentError) as exc:
            return ActionOutcome(False, False, str(exc))

    def _webhook(
        self,
        claim: Claim,
        action: Mapping[str, Any],
        context: Mapping[str, Any],
        secret: str,
        where: str,
    ) -> ActionOutcome:
        url = str(action["url"])
        webhooks.check_url(url, self.settings.webhook_hosts, where=f"{where}.url")
        body = webhooks.payload(
            claim.workflow_id, claim.execution_id, claim.idempotency_key, claim.trigger_data
        )
        headers = {
            **templates.render(action.get("headers") or {}, context, f"{where}.headers"),
            webhooks.IDEMPOTENCY_HEADER: claim.idempotency_key,
            webhooks.SIGNATURE_HEADER: webhooks.sign(secret, body),
            "X-Automation-Attempt": str(claim.attempt),
        }
        outcome = webhooks.post(
            url,
            body,
            headers,
            timeout=self.settings.workflow_webhook_timeout_seconds,
            client=self.http,
        )
        detail = (
            outcome.detail if outcome.status is None else f"HTTP {outcome.status}: {outcome.detail}"
        )
        return ActionOutcome(
            outcome.ok, outcome.transient, detail, outcome.status, outcome.retry_after
        )

    def _task(
        self,
        claim: Claim,
        index: int,
        action: Mapping[str, Any],
        context: Mapping[str, Any],
        where: str,
    ) -> ActionOutcome:
        name = str(action["task"])
        kwargs = templates.render(action.get("kwargs") or {}, context, f"{where}.kwargs")
        task = self.app.tasks.get(name)
        if task is None:
            return ActionOutcome(False, False, f"{where}.task: no task named {name}")
        validate_arguments(name, task.run, (), kwargs)
        # The same id on every attempt: a resend after a crash is one task to Flower.
        task_id = str(uuid.uuid5(_TASK_IDS, f"{claim.execution_id}/{index}"))
        self.app.send_task(
            name,
            kwargs=kwargs,
            task_id=task_id,
            headers={ORIGIN_HEADER: json.dumps({"chain": claim.chain})},
        )
        return ActionOutcome(True, False, f"sent {name}[{task_id}]")

    def _notify(
        self,
        claim: Claim,
        index: int,
        action: Mapping[str, Any],
        context: Mapping[str, Any],
        where: str,
    ) -> ActionOutcome:
        user_id = templates.render(
            action.get("user_id", "{job.user_id}"), context, f"{where}.user_id"
        )
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            return ActionOutcome(False, False, f"{where}.user_id: {user_id!r} is not a user id")
        title = str(templates.render(action["title"], context, f"{where}.title"))
        body = action.get("body")
        text = None if body is None else str(templates.render(body, context, f"{where}.body"))
        try:
            with session_scope() as session:
                session.execute(
                    insert(Notification)
                    .values(
                        user_id=user_id,
                        workflow_id=claim.workflow_id,
                        execution_id=claim.execution_id,
                        action_index=index,
                        title=title,
                        body=text,
                    )
                    .on_conflict_do_nothing(index_elements=["execution_id", "action_index"])
                )
        except IntegrityError as exc:
            if isinstance(exc.orig, psycopg.errors.ForeignKeyViolation):
                return ActionOutcome(False, False, f"{where}.user_id: there is no user {user_id}")
            raise
        return ActionOutcome(True, False, f"notified user {user_id}")
