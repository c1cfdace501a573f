"""A workflow file, read and checked: what ``automation workflow create --file`` and the API
accept, normalised into what is stored (``automation_workflows.definition``).

```json
{
  "name": "tell the importer when an upload is done",
  "user_id": null,
  "trigger": {"type": "job_status_changed", "source": "upload_jobs"},
  "conditions": {"all": [{"field": "new_status", "op": "eq", "value": "completed"}]},
  "actions": [
    {"type": "webhook", "url": "http://127.0.0.1:9000/hook"},
    {"type": "task", "task": "listening.aggregate_user", "kwargs": {"user_id": "{job.user_id}"}},
    {"type": "notification", "title": "Upload {job_id} is {new_status}"}
  ],
  "rate_limit": {"per_job_status": "1/h", "per_workflow": "60/m"},
  "idempotency_key": "{job_id}-{new_status}-{workflow_id}-{date}",
  "debounce": {"seconds": 30, "key": "{job_id}"},
  "concurrency": {"key": "{job.user_id}", "limit": 1},
  "max_attempts": 5,
  "active": true
}
```

Only ``name``, ``trigger`` and ``actions`` are required. Defaults: conditions that always
hold, ``per_job_status`` one execution an hour (``null`` lifts it), no per-workflow limit,
the key shown, no debounce, no concurrency limit, five attempts. A rate is ``N/s``,
``N/m``, ``N/h`` or ``N/d``. Every error names the part it is about.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tasks.workflows import conditions, templates
from tasks.workflows.sources import SOURCES
from tasks.workflows.webhooks import WebhookRefusedError, check_url

DEFAULT_IDEMPOTENCY_KEY = "{job_id}-{new_status}-{workflow_id}-{date}"
DEFAULT_PER_JOB_STATUS = "1/h"
MAX_ATTEMPTS_LIMIT = 20
ACTION_TYPES = ("webhook", "task", "notification")
# A workflow's task may not be one of these families: the workflows' own machinery.
REFUSED_TASK_FAMILIES = ("workflows", "celery")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# A workflow file's keys in the order a person reads them (jsonb keeps its own order).
DOCUMENT_KEYS = (
    "name",
    "user_id",
    "trigger",
    "conditions",
    "actions",
    "rate_limit",
    "idempotency_key",
    "debounce",
    "concurrency",
    "max_attempts",
    "active",
)
_KEYS = {*DOCUMENT_KEYS, "secret"}


class DefinitionError(ValueError):
    """The workflow file is not valid; the message names the bad part."""


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    def __str__(self) -> str:
        unit = {v: k for k, v in _UNIT_SECONDS.items()}.get(self.seconds)
        return f"{self.count}/{unit}" if unit else f"{self.count}/{self.seconds}s"


def parse_rate(value: Any, where: str) -> Rate | None:
    if value is None:
        return None
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) < 1:
        raise DefinitionError(f"{where}: a rate is N/s, N/m, N/h or N/d with N >= 1, got {value!r}")
    return Rate(int(match.group(1)), _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True)
class Definition:
    """A valid workflow, as stored. ``document`` is the normalised file."""

    name: str
    user_id: int | None
    source: str
    conditions: dict[str, Any]
    actions: list[dict[str, Any]]
    per_job_status: Rate | None
    per_workflow: Rate | None
    idempotency_key: str
    debounce_seconds: float | None
    debounce_key: str | None
    concurrency_key: str | None
    concurrency_limit: int | None
    max_attempts: int
    active: bool
    secret: str | None  # given in the file; otherwise one is made when it is saved

    @property
    def on_statuses(self) -> list[str] | None:
        return conditions.required_statuses(self.conditions)

    @property
    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "user_id": self.user_id,
            "trigger": {"type": "job_status_changed", "source": self.source},
            "conditions": self.conditions,
            "actions": self.actions,
            "rate_limit": {
                "per_job_status": None if self.per_job_status is None else str(self.per_job_status),
                "per_workflow": None if self.per_workflow is None else str(self.per_workflow),
            },
            "idempotency_key": self.idempotency_key,
            "debounce": None
            if self.debounce_seconds is None
            else {"seconds": self.debounce_seconds, "key": self.debounce_key},
            "concurrency": None
            if self.concurrency_limit is None
            else {"key": self.concurrency_key, "limit": self.concurrency_limit},
            "max_attempts": self.max_attempts,
            "active": self.active,
        }


def parse(data: Any, *, known_tasks: Collection[str], allowed_hosts: Collection[str]) -> Definition:
    """Check a workflow file; ``DefinitionError`` names the first bad part."""
    if not isinstance(data, Mapping):
        raise DefinitionError("a workflow is a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise DefinitionError(
            f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}"
        )
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("name: required, a non-empty string")
    user_id = data.get("user_id")
    if user_id is not None and (not isinstance(user_id, int) or isinstance(user_id, bool)):
        raise DefinitionError("user_id: a user's id, or null for a platform-wide workflow")
    trigger = data.get("trigger")
    if not isinstance(trigger, Mapping) or trigger.get("type") != "job_status_changed":
        raise DefinitionError('trigger: must be {"type": "job_status_changed", "source": ...}')
    source = SOURCES.get(str(trigger.get("source")))
    if source is None:
        raise DefinitionError(
            f"trigger.source: {trigger.get('source')!r} is not a source; sources: "
            f"{', '.join(sorted(SOURCES))}"
        )
    condition = data.get("conditions") or {"all": []}
    try:
        conditions.validate(condition, "conditions", source.columns, source.statuses)
    except conditions.ConditionError as exc:
        raise DefinitionError(str(exc)) from None
    actions = _actions(data.get("actions"), source.columns, known_tasks, allowed_hosts)
    rate_limit = data.get("rate_limit") or {}
    if not isinstance(rate_limit, Mapping) or set(rate_limit) - {"per_job_status", "per_workflow"}:
        raise DefinitionError('rate_limit: an object with "per_job_status" and "per_workflow"')
    key = data.get("idempotency_key") or DEFAULT_IDEMPOTENCY_KEY
    debounce = data.get("debounce")
    concurrency = data.get("concurrency")
    max_attempts = data.get("max_attempts", 5)
    if not isinstance(max_attempts, int) or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise DefinitionError(f"max_attempts: a whole number from 1 to {MAX_ATTEMPTS_LIMIT}")
    active = data.get("active", True)
    if not isinstance(active, bool):
        raise DefinitionError("active: true or false")
    secret = data.get("secret")
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        raise DefinitionError("secret: at least 16 characters (or leave it out to get one)")
    _template(key, "idempotency_key", source.columns)
    debounce_seconds, debounce_key = _debounce(debounce, source.columns)
    concurrency_key, concurrency_limit = _concurrency(concurrency, source.columns)
    return Definition(
        name=name.strip(),
        user_id=user_id,
        source=source.table,
        conditions=dict(condition),
        actions=actions,
        per_job_status=parse_rate(
            rate_limit.get("per_job_status", DEFAULT_PER_JOB_STATUS), "rate_limit.per_job_status"
        ),
        per_workflow=parse_rate(rate_limit.get("per_workflow"), "rate_limit.per_workflow"),
        idempotency_key=key,
        debounce_seconds=debounce_seconds,
        debounce_key=debounce_key,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        max_attempts=max_attempts,
        active=active,
        secret=secret,
    )


def _template(template: Any, where: str, columns: Collection[str]) -> None:
    if not isinstance(template, str) or not template.strip():
        raise DefinitionError(f"{where}: a non-empty template string")
    try:
        templates.check(template, where, columns)
    except templates.TemplateError as exc:
        raise DefinitionError(str(exc)) from None


def _debounce(value: Any, columns: Collection[str]) -> tuple[float | None, str | None]:
    if value is None:
        return None, None
    if not isinstance(value, Mapping) or set(value) - {"seconds", "key"}:
        raise DefinitionError('debounce: {"seconds": N, "key": "{job_id}"}')
    seconds = value.get("seconds")
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not 0 < seconds <= 86400
    ):
        raise DefinitionError("debounce.seconds: more than 0, at most a day")
    key = value.get("key", "{job_id}")
    _template(key, "debounce.key", columns)
    return float(seconds), key


def _concurrency(value: Any, columns: Collection[str]) -> tuple[str | None, int | None]:
    if value is None:
        return None, None
    if not isinstance(value, Mapping) or set(value) - {"key", "limit"}:
        raise DefinitionError('concurrency: {"key": "{job.user_id}", "limit": N}')
    limit = value.get("limit")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise DefinitionError("concurrency.limit: a whole number, at least 1")
    key = value.get("key", "{workflow_id}")
    _template(key, "concurrency.key", columns)
    return key, limit


def _actions(  # noqa: PLR0912 (a branch per rule)
    value: Any,
    columns: Collection[str],
    known_tasks: Collection[str],
    allowed_hosts: Collection[str],
) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise DefinitionError("actions: a non-empty list")
    actions = []
    for index, action in enumerate(value):
        where = f"actions[{index}]"
        if not isinstance(action, Mapping) or action.get("type") not in ACTION_TYPES:
            raise DefinitionError(f"{where}.type: one of {', '.join(ACTION_TYPES)}")
        kind = action["type"]
        allowed = {
            "webhook": {"type", "url", "headers"},
            "task": {"type", "task", "kwargs"},
            "notification": {"type", "title", "body", "user_id"},
        }[kind]
        extra = set(action) - allowed
        if extra:
            raise DefinitionError(
                f"{where}: unknown key(s) {', '.join(sorted(extra))} for a {kind} action; "
                f"known: {', '.join(sorted(allowed))}"
            )
        try:
            if kind == "webhook":
                url = action.get("url")
                if not isinstance(url, str):
                    raise DefinitionError(f"{where}.url: required")
                check_url(url, allowed_hosts, resolve=False, where=f"{where}.url")
                headers = action.get("headers") or {}
                if not isinstance(headers, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
                ):
                    raise DefinitionError(f"{where}.headers: an object of strings")
                templates.check(headers, f"{where}.headers", columns)
            elif kind == "task":
                task = action.get("task")
                if not isinstance(task, str) or task not in known_tasks:
                    raise DefinitionError(
                        f"{where}.task: {task!r} is not a public task name; see "
                        "`automation trigger --help` or GET /api/automation/trigger"
                    )
                if task.partition(".")[0] in REFUSED_TASK_FAMILIES:
                    raise DefinitionError(f"{where}.task: a workflow may not run {task}")
                kwargs = action.get("kwargs") or {}
                if not isinstance(kwargs, Mapping):
                    raise DefinitionError(f"{where}.kwargs: an object")
                templates.check(kwargs, f"{where}.kwargs", columns)
            else:
                title = action.get("title")
                if not isinstance(title, str) or not title.strip():
                    raise DefinitionError(f"{where}.title: required")
                if "user_id" not in action and "user_id" not in columns:
                    raise DefinitionError(
                        f"{where}.user_id: this source's jobs have no user_id; say whose it is"
                    )
                templates.check(
                    {k: action.get(k) for k in ("title", "body", "user_id")}, where, columns
                )
        # Both name the part they refuse; callers need only catch DefinitionError.
        except (templates.TemplateError, WebhookRefusedError) as exc:
            raise DefinitionError(str(exc)) from None
        actions.append(dict(action))
    return actions
