"""From status changes to executions: one matching pass over a batch of changes.

The dispatcher (``worker.ledger.outbox``) calls ``dispatch`` when the status trigger
notifies, and every few seconds in case a notification was missed (or the change was
committed while no worker ran). A pass holds the matcher lock, so limits and duplicates
are decided against everything before it, then:

1. takes a batch of unmatched changes and, in one query, every active workflow each one
   meets (source, owner, the statuses its conditions can hold for);
2. decides each pair in Python, in this order: the loop guard, the conditions, the
   idempotency key, the per job and status limit, the per-workflow limit; what does not
   run is written ``skipped`` with its reason, so nothing is dropped unseen;
3. writes every decision in one INSERT and marks the changes matched, in one transaction;
4. publishes a message for each pending execution (``publish_pending``), with a countdown
   when it is debounced.

A pair is written once (unique per workflow and change) and a key runs once (unique per
workflow and key among executions that ran), so a change matched twice, by a replay or
two dispatchers, makes one execution.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from db import channels
from db.queries import queries
from db.session import session_scope
from tasks.workflows import conditions, templates
from tasks.workflows.definition import (
    DEFAULT_IDEMPOTENCY_KEY,
    DEFAULT_PER_JOB_STATUS,
    DefinitionError,
    Rate,
    parse_rate,
)
from worker.backoff import whole_seconds
from worker.ledger.outbox import Source
from worker.queues import home_queue
from worker.settings import get_settings

log = logging.getLogger(__name__)
SQL = queries("tasks.workflows", "workflows")
EXECUTE_TASK = "workflows.execute"


@dataclass
class Matched:
    changes: int = 0
    executions: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def trigger_data(change: Mapping[str, Any], workflow_id: int) -> dict[str, Any]:
    """What conditions and templates see of a change."""
    changed_at: dt.datetime = change["changed_at"]
    return {
        "source": change["source"],
        "job_id": change["job_id"],
        "old_status": change["old_status"],
        "new_status": change["new_status"],
        "job": change["job"],
        "changed_at": changed_at.isoformat(),
        "date": changed_at.astimezone(dt.UTC).date().isoformat(),
        "workflow_id": workflow_id,
        "change_id": change["id"],
    }


def match_changes(
    session: Session, now: dt.datetime, *, max_depth: int, batch: int = 500
) -> Matched:
    """Match one batch of unmatched changes; the caller commits."""
    session.execute(SQL["lock_matcher"])
    changes = session.execute(SQL["take_changes"], {"batch": batch}).mappings().all()
    result = Matched(changes=len(changes))
    if not changes:
        return result
    by_id: dict[int, Mapping[str, Any]] = {change["id"]: dict(change) for change in changes}
    pairs = session.execute(SQL["candidates"], {"change_ids": list(by_id)}).mappings().all()
    found: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = [
        (by_id[p["change_id"]], dict(p)) for p in pairs
    ]
    decider = _Decider(session, now, max_depth, found)
    rows = [decider.decide_safely(change, p["workflow_id"], p["definition"]) for change, p in found]
    if rows:
        written = session.execute(
            SQL["insert_executions"], {"rows": json.dumps(rows, default=str)}
        ).all()
        result.executions = sum(1 for row in written if row.status == "pending")
        if len(written) < len(rows):
            log.warning(
                "workflows: %d of %d decisions were already written (a change matched again)",
                len(rows) - len(written),
                len(rows),
            )
    for row in rows:
        if row["status"] == "skipped":
            reason = str(row["skip_reason"]).partition(":")[0]
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
    session.execute(SQL["mark_matched"], {"now": now, "change_ids": list(by_id)})
    return result


class _Decider:
    """The per-pair decisions of one batch, with what they need fetched in bulk."""

    def __init__(
        self,
        session: Session,
        now: dt.datetime,
        max_depth: int,
        pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    ) -> None:
        self.session = session
        self.now = now
        self.max_depth = max_depth
        definitions = {p["workflow_id"]: p["definition"] for _, p in pairs}
        # Per job and status: the times of executions that count, per (workflow, job, status).
        self.recent: dict[tuple[int, int, str], list[dt.datetime]] = defaultdict(list)
        windows = {
            wid: _rate(d, "per_job_status", DEFAULT_PER_JOB_STATUS)
            for wid, d in definitions.items()
        }
        keyed = [(p["workflow_id"], c["job_id"], c["new_status"]) for c, p in pairs]
        longest = max((r.seconds for r in windows.values() if r), default=0)
        if keyed and longest:
            rows = session.execute(
                SQL["recent_for_job_status"],
                {
                    "workflow_ids": [k[0] for k in keyed],
                    "job_ids": [k[1] for k in keyed],
                    "statuses": [k[2] for k in keyed],
                    "since": now - dt.timedelta(seconds=longest),
                },
            ).all()
            for row in rows:
                self.recent[(row.workflow_id, row.job_id, row.new_status)].append(row.at)
        self.job_status_rate = windows
        # Per workflow: how many it made in its window, counted on as this batch adds.
        self.workflow_rate = {wid: _rate(d, "per_workflow", None) for wid, d in definitions.items()}
        limited = {wid: r for wid, r in self.workflow_rate.items() if r is not None}
        self.made: dict[int, int] = {}
        if limited:
            rows = session.execute(
                SQL["recent_per_workflow"],
                {
                    "workflow_ids": list(limited),
                    "since": [now - dt.timedelta(seconds=r.seconds) for r in limited.values()],
                },
            ).all()
            self.made = {row.workflow_id: row.made for row in rows}
        # What each pair's conditions and templates see; the idempotency keys already used,
        # and those this batch takes.
        self.data: dict[tuple[int, int], dict[str, Any]] = {}
        self.keys: dict[tuple[int, int], str] = {}
        for change, pair in pairs:
            data = self.data[(change["id"], pair["workflow_id"])] = trigger_data(
                change, pair["workflow_id"]
            )
            try:
                key = str(templates.render(pair["definition"]["idempotency_key"], data))
            except (templates.TemplateError, KeyError, TypeError):
                # A key naming a field this job lacks: the default key, so it still runs once.
                key = str(templates.render(DEFAULT_IDEMPOTENCY_KEY, data))
            self.keys[(change["id"], pair["workflow_id"])] = key
        used = session.execute(
            SQL["existing_keys"],
            {
                "workflow_ids": [wid for _, wid in self.keys],
                "keys": list(self.keys.values()),
            },
        ).all()
        self.used_keys = {(row.workflow_id, row.idempotency_key) for row in used}
        # The pending debounced row this batch made last, per (workflow, debounce key).
        self.debounced: dict[tuple[int, str], dict[str, Any]] = {}

    def decide_safely(
        self, change: Mapping[str, Any], workflow_id: int, definition: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``decide``, except that a workflow whose stored definition is broken (edited by
        hand in the database: ``store`` never writes one) is skipped with the reason
        rather than failing the whole batch again at every pass."""
        try:
            return self.decide(change, workflow_id, definition)
        except Exception as exc:
            log.exception("workflows: workflow %s cannot be decided", workflow_id)
            return self._row(change, workflow_id, definition) | {
                "status": "skipped",
                "skip_reason": f"invalid workflow definition: {type(exc).__name__}: {exc}"[:500],
            }

    def decide(
        self, change: Mapping[str, Any], workflow_id: int, definition: Mapping[str, Any]
    ) -> dict[str, Any]:
        row = self._row(change, workflow_id, definition)
        data, key, chain = row["trigger_data"], row["idempotency_key"], row["chain"][:-1]
        reason = self._skip_reason(change, workflow_id, definition, data, chain, key)
        if reason is not None:
            return row | {"status": "skipped", "skip_reason": reason}
        self.used_keys.add((workflow_id, key))
        self.recent[(workflow_id, change["job_id"], change["new_status"])].append(self.now)
        self.made[workflow_id] = self.made.get(workflow_id, 0) + 1
        concurrency = definition.get("concurrency")
        if concurrency:
            row["concurrency_key"] = _render_key(concurrency["key"], data)
        debounce = definition.get("debounce")
        if debounce:
            row["debounce_key"] = _render_key(debounce["key"], data)
            row["run_after"] = (self.now + dt.timedelta(seconds=debounce["seconds"])).isoformat()
            self.session.execute(
                SQL["supersede_debounced"],
                {
                    "workflow_id": workflow_id,
                    "debounce_key": row["debounce_key"],
                    "change_id": change["id"],
                },
            )
            # ... and so does one this same batch decided a moment ago.
            earlier = self.debounced.get((workflow_id, row["debounce_key"]))
            if earlier is not None:
                earlier["status"] = "skipped"
                earlier["skip_reason"] = f"debounced: superseded by change {change['id']}"
                self.made[workflow_id] -= 1
            self.debounced[(workflow_id, row["debounce_key"])] = row
        return row

    def _row(
        self, change: Mapping[str, Any], workflow_id: int, definition: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The execution row for the pair, pending until decided otherwise."""
        chain = list((change["origin"] or {}).get("chain", []))
        max_attempts = definition.get("max_attempts", 5) if isinstance(definition, Mapping) else 5
        return {
            "workflow_id": workflow_id,
            "change_id": change["id"],
            "source": change["source"],
            "job_id": change["job_id"],
            "user_id": change["user_id"],
            "old_status": change["old_status"],
            "new_status": change["new_status"],
            "trigger_data": self.data.get((change["id"], workflow_id))
            or trigger_data(change, workflow_id),
            "status": "pending",
            "skip_reason": None,
            "idempotency_key": self.keys.get((change["id"], workflow_id), f"change-{change['id']}"),
            "chain": [*chain, workflow_id],
            "debounce_key": None,
            "concurrency_key": None,
            "max_attempts": max_attempts,
            "run_after": self.now.isoformat(),
        }

    def _skip_reason(  # noqa: PLR0911 (a return per rule)
        self,
        change: Mapping[str, Any],
        workflow_id: int,
        definition: Mapping[str, Any],
        data: Mapping[str, Any],
        chain: list[int],
        key: str,
    ) -> str | None:
        if workflow_id in chain:
            return (
                f"loop: this change was caused by this workflow's own action "
                f"(chain {' -> '.join(map(str, chain))})"
            )
        if len(chain) >= self.max_depth:
            return (
                f"loop: the change comes through {len(chain)} workflows "
                f"({' -> '.join(map(str, chain))}), the most WORKFLOW_MAX_CHAIN_DEPTH allows"
            )
        if not conditions.evaluate(definition.get("conditions") or {"all": []}, data):
            return "conditions false"
        if (workflow_id, key) in self.used_keys:
            return f"duplicate: idempotency key {key} already ran"
        rate = self.job_status_rate.get(workflow_id)
        if rate is not None:
            since = self.now - dt.timedelta(seconds=rate.seconds)
            times = self.recent[(workflow_id, change["job_id"], change["new_status"])]
            if sum(1 for at in times if at > since) >= rate.count:
                return (
                    f"rate limited: job {change['job_id']} was {change['new_status']} "
                    f"within the limit of {rate} for this workflow"
                )
        per_workflow = self.workflow_rate.get(workflow_id)
        if per_workflow is not None and self.made.get(workflow_id, 0) >= per_workflow.count:
            return f"rate limited: the workflow's limit of {per_workflow} is reached"
        return None


def _rate(definition: Mapping[str, Any], name: str, default: str | None) -> Rate | None:
    """A rate limit of a stored definition; a broken one counts as none (the pair itself is
    then skipped as invalid by ``decide_safely`` if anything else is broken too)."""
    try:
        return parse_rate((definition.get("rate_limit") or {}).get(name, default), name)
    except (DefinitionError, AttributeError, TypeError):
        return None


def _render_key(template: str, data: Mapping[str, Any]) -> str:
    try:
        return str(templates.render(template, data))
    except templates.TemplateError as exc:
        return f"<{exc}>"


def publish_pending(session: Session, app: Celery, *, batch: int = 500) -> int:
    """Publish a message for every pending execution without one; the caller commits
    after (a crash between leaves them unpublished, for the next pass)."""
    rows = session.execute(SQL["take_unpublished"], {"batch": batch}).all()
    if not rows:
        return 0
    with app.producer_or_acquire() as producer:
        for row in rows:
            app.send_task(
                EXECUTE_TASK,
                args=(row.id,),
                task_id=row.celery_task_id,
                countdown=whole_seconds(float(row.delay)),
                producer=producer,
            )
    return len(rows)


def dispatch(
    session_factory: Callable[[], Any], app: Celery, *, max_depth: int, batch: int = 500
) -> int:
    """Match every waiting change and publish every waiting execution; how many executions
    were published."""
    published = 0
    while True:
        with session_factory() as session:
            matched = match_changes(
                session, dt.datetime.now(dt.UTC), max_depth=max_depth, batch=batch
            )
        if matched.changes:
            log.info(
                "workflows: %d change(s) matched, %d execution(s), skipped %s",
                matched.changes,
                matched.executions,
                matched.skipped or "none",
            )
        while True:
            with session_factory() as session:
                sent = publish_pending(session, app, batch=batch)
            published += sent
            if sent < batch:
                break
        if matched.changes < batch:
            return published


# The status trigger notifies; the workers of the executions' queue match and publish.
CHANGES_SOURCE = Source(
    channels.JOB_STATUS_CHANGES,
    queues=lambda app: {home_queue(EXECUTE_TASK)},
    dispatch=lambda app: dispatch(
        session_scope, app, max_depth=get_settings().workflow_max_chain_depth
    ),
)
