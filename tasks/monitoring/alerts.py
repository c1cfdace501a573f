"""The alert check (``monitoring.check_alerts``, every minute): conditions, incidents and
the webhook.

A condition that holds opens an incident in ``alert_incidents`` (one open incident per
alert key, a unique partial index), and the incident closes at the first check that finds
the condition gone. The webhook (ALERT_WEBHOOK_URL) is told once when an incident opens and
once when it recovers: ``notified_open_at`` / ``notified_resolved_at`` are set only when it
accepted, so a webhook that is down is tried again at each check until it takes the
notice, and a condition that lasts is never posted twice. Without a webhook, incidents are
still recorded and logged (error on opening, warning on recovery).

Conditions, each with its key:

- ``ledger_stuck``: more than ALERT_STUCK_JOBS ledger rows pending for over
  ALERT_STUCK_JOBS_MINUTES;
- ``schedule_missed:<entry>``: beat did not fire the entry's last slot (ALERT_SCHEDULE_GRACE
  _SECONDS after it);
- ``schedule_failing:<entry>``: the entry's last two finished runs failed;
- ``enrichment_stalled``: a backlog with no progress for ENRICHMENT_STALL_ALERT_HOURS;
- ``dead_letters``: dead letters arrived since the last check (it recovers at the first
  check that finds none new);
- ``no_worker:<queue>``: no live worker consumes the queue;
- ``workflows_unmatched``: a job's status change has waited over 5 minutes for the
  workflows' dispatcher (no worker on the workflows queue runs one, or it keeps failing);
- ``workflows_waiting``: a workflow execution due over 10 minutes ago has not started;
- ``ingest_stuck``: more than ALERT_INGEST_QUEUED_JOBS media ingest jobs queued for over
  ALERT_INGEST_QUEUED_MINUTES (workers missing or too few, or the pipeline left paused).

The two workflow thresholds are monitoring/alerts.yml's, so both ways of alerting agree.

A family whose facts cannot be read (Redis down, for the workers) is left as it was: its
open incidents neither resolve nor repeat.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import AlertIncident
from tasks.enrichment.monitoring import find_stall
from tasks.ingest import control as ingest_control
from tasks.monitoring import readings
from worker import liveness
from worker.queues import QUEUE_NAMES
from worker.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 10.0
FAILING_RUNS = 2  # the last two finished runs of an entry failed
WORKFLOWS_UNMATCHED_AFTER = dt.timedelta(minutes=5)
WORKFLOWS_WAITING_AFTER = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Condition:
    """An alert that holds now: its key, one line for people, and the facts behind it."""

    alert: str
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.alert.partition(":")[0]


@dataclass
class Evaluation:
    holding: list[Condition] = field(default_factory=list)
    # Families whose facts were read: only their incidents may resolve.
    evaluated: set[str] = field(default_factory=set)


def _ledger(session: Session, now: dt.datetime, settings: Settings, out: Evaluation) -> None:
    minutes = settings.alert_stuck_jobs_minutes
    stale = readings.stale_pending(session, now, dt.timedelta(minutes=minutes))
    out.evaluated.add("ledger_stuck")
    if stale > settings.alert_stuck_jobs:
        out.holding.append(
            Condition(
                "ledger_stuck",
                f"{stale} ledger jobs pending for over {minutes} min "
                f"(threshold {settings.alert_stuck_jobs})",
                {"pending": stale, "minutes": minutes},
            )
        )


def _schedules(session: Session, now: dt.datetime, settings: Settings, out: Evaluation) -> None:
    grace = dt.timedelta(seconds=settings.alert_schedule_grace_seconds)
    out.evaluated |= {"schedule_missed", "schedule_failing"}
    for entry in readings.schedule_health(session, now, grace):
        if entry.missed:
            out.holding.append(
                Condition(
                    f"schedule_missed:{entry.entry}",
                    f"schedule entry {entry.entry} ({entry.task}) did not fire its slot "
                    f"{readings.as_json(entry.due_slot)}",
                    {
                        "entry": entry.entry,
                        "task": entry.task,
                        "slot": readings.as_json(entry.due_slot),
                        "last_fired_slot": readings.as_json(entry.last_slot),
                    },
                )
            )
        if entry.failures_in_a_row >= FAILING_RUNS:
            out.holding.append(
                Condition(
                    f"schedule_failing:{entry.entry}",
                    f"schedule entry {entry.entry} ({entry.task}): its last "
                    f"{entry.failures_in_a_row} runs failed",
                    {
                        "entry": entry.entry,
                        "task": entry.task,
                        "failures_in_a_row": entry.failures_in_a_row,
                        "last_success_at": readings.as_json(entry.last_success_at),
                    },
                )
            )


def _enrichment(session: Session, now: dt.datetime, settings: Settings, out: Evaluation) -> None:
    stall = find_stall(session, now, dt.timedelta(hours=settings.enrichment_stall_alert_hours))
    out.evaluated.add("enrichment_stalled")
    if stall is not None:
        out.holding.append(
            Condition(
                "enrichment_stalled",
                stall.message(now),
                {"backlog": stall.backlog, "last_progress": stall.last_progress.isoformat()},
            )
        )


def _last_dead_letter_seen(session: Session) -> int:
    """The newest dead letter an earlier check saw (kept with the incidents it opened)."""
    seen = session.scalar(
        select(AlertIncident.detail["last_id"].as_integer())
        .where(AlertIncident.alert == "dead_letters")
        .order_by(AlertIncident.opened_at.desc(), AlertIncident.id.desc())
        .limit(1)
    )
    return int(seen or 0)


def _dead_letters(session: Session, out: Evaluation) -> None:
    seen = _last_dead_letter_seen(session)
    row = session.execute(readings.SQL["dead_letters_after"], {"after": seen}).one()
    out.evaluated.add("dead_letters")
    if row.n:
        out.holding.append(
            Condition(
                "dead_letters",
                f"{row.n} new dead letters (messages no task could take)",
                {"new": int(row.n), "last_id": int(row.last_id), "since_id": seen},
            )
        )


def _workflows(session: Session, now: dt.datetime, out: Evaluation) -> None:
    health = readings.workflow_health(session, now)
    out.evaluated |= {"workflows_unmatched", "workflows_waiting"}
    unmatched = health.oldest_unmatched_at
    if unmatched is not None and now - unmatched > WORKFLOWS_UNMATCHED_AFTER:
        waited = int((now - unmatched).total_seconds())
        out.holding.append(
            Condition(
                "workflows_unmatched",
                f"{health.unmatched} job status changes wait for the workflows' dispatcher, "
                f"the oldest for {waited} s (is a worker on the workflows queue running?)",
                {"unmatched": health.unmatched, "oldest_seconds": waited},
            )
        )
    due = health.oldest_due_at
    if due is not None and now - due > WORKFLOWS_WAITING_AFTER:
        waited = int((now - due).total_seconds())
        out.holding.append(
            Condition(
                "workflows_waiting",
                f"{health.pending} workflow executions pending, the longest due for {waited} s",
                {"pending": health.pending, "oldest_seconds": waited},
            )
        )


def _ingest(session: Session, now: dt.datetime, settings: Settings, out: Evaluation) -> None:
    minutes = settings.alert_ingest_queued_minutes
    stale = ingest_control.queued_longer_than(session, now, dt.timedelta(minutes=minutes))
    out.evaluated.add("ingest_stuck")
    if stale > settings.alert_ingest_queued_jobs:
        live = ingest_control.controls(session)
        paused = live["paused_at"] is not None
        # A pause left on is the likeliest cause, and one an operator can end at once.
        hint = f"; ingest is paused (by {live['paused_by'] or 'someone'})" if paused else ""
        out.holding.append(
            Condition(
                "ingest_stuck",
                f"{stale} ingest jobs queued for over {minutes} min "
                f"(threshold {settings.alert_ingest_queued_jobs}){hint}",
                {"queued": stale, "minutes": minutes, "paused": paused},
            )
        )


def _workers(client: redis.Redis, out: Evaluation) -> None:
    try:
        served = {q for queues in liveness.worker_queues(client).values() for q in queues}
    except redis.RedisError as exc:
        log.warning("alert check: worker heartbeats unreadable (%s); left as they were", exc)
        return
    out.evaluated.add("no_worker")
    for queue in QUEUE_NAMES:
        if queue not in served:
            out.holding.append(
                Condition(
                    f"no_worker:{queue}", f"no live worker consumes queue {queue}", {"queue": queue}
                )
            )


def evaluate(
    session: Session, client: redis.Redis, now: dt.datetime, settings: Settings
) -> Evaluation:
    out = Evaluation()
    _ledger(session, now, settings, out)
    _schedules(session, now, settings, out)
    _enrichment(session, now, settings, out)
    _dead_letters(session, out)
    _workflows(session, now, out)
    _ingest(session, now, settings, out)
    _workers(client, out)
    return out


def record_incidents(session: Session, now: dt.datetime, found: Evaluation) -> dict[str, list[str]]:
    """Open an incident per new condition, resolve the open ones that no longer hold."""
    holding = {c.alert: c for c in found.holding}
    open_now = {
        i.alert: i
        for i in session.scalars(select(AlertIncident).where(AlertIncident.resolved_at.is_(None)))
    }
    opened = [c for key, c in holding.items() if key not in open_now]
    for condition in opened:
        session.execute(
            insert(AlertIncident)
            .values(
                alert=condition.alert,
                opened_at=now,
                summary=condition.summary,
                detail=condition.detail,
            )
            .on_conflict_do_nothing(
                index_elements=["alert"], index_where=text("resolved_at IS NULL")
            )
        )
        log.error("alert opened: %s", condition.summary)
    for key, incident in open_now.items():
        if key in holding and key == "dead_letters":
            # More arrived while it lasts: remember the newest, so they are not new again.
            incident.detail = {**incident.detail, **holding[key].detail}
    resolved = [
        key
        for key, incident in open_now.items()
        if key not in holding and key.partition(":")[0] in found.evaluated
    ]
    if resolved:
        session.execute(
            update(AlertIncident)
            .where(AlertIncident.alert.in_(resolved), AlertIncident.resolved_at.is_(None))
            .values(resolved_at=now)
        )
        for key in resolved:
            log.warning("alert recovered: %s (%s)", key, open_now[key].summary)
    session.flush()
    return {"opened": [c.alert for c in opened], "resolved": resolved}


def payload(incident: AlertIncident, state: str) -> dict[str, Any]:
    """What the webhook gets: ``text`` for chat hooks (Slack, Mattermost), the rest for
    tools."""
    prefix = "[FIRING]" if state == "firing" else "[RESOLVED]"
    return {
        "alert": incident.alert,
        "state": state,
        "text": f"{prefix} {incident.summary}",
        "summary": incident.summary,
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": readings.as_json(incident.resolved_at),
        "detail": incident.detail,
    }


# Notices of an incident that ended longer ago than this are not posted late.
NOTICE_HORIZON = dt.timedelta(hours=24)


def _post(url: str, body: dict[str, Any]) -> bool:
    try:
        httpx.post(url, json=body, timeout=WEBHOOK_TIMEOUT_SECONDS).raise_for_status()
    except httpx.HTTPError as exc:
        log.error(
            "alert %s (%s) not delivered to ALERT_WEBHOOK_URL: %s; tried again at the next check",
            body["alert"],
            body["state"],
            exc,
        )
        return False
    return True


def notify(session: Session, now: dt.datetime, settings: Settings) -> list[dict[str, Any]]:
    """Post the notices the webhook has not taken yet, oldest first; the ones it took.

    The first refusal ends the round: the rest wait for the next check, so notices arrive
    in order and a webhook that is down costs one timeout a minute, not one per notice.
    An incident over for longer than ``NOTICE_HORIZON`` is not posted late (a webhook
    configured, or back, after days would otherwise replay old news); it stays on record.
    """
    url = settings.alert_webhook_url
    if not url:
        return []
    pending = session.scalars(
        select(AlertIncident)
        .where(
            AlertIncident.notified_open_at.is_(None)
            | (
                AlertIncident.resolved_at.is_not(None)
                & AlertIncident.notified_resolved_at.is_(None)
            ),
            AlertIncident.resolved_at.is_(None)
            | (AlertIncident.resolved_at > now - NOTICE_HORIZON),
        )
        .order_by(AlertIncident.opened_at, AlertIncident.id)
    )
    sent: list[dict[str, Any]] = []
    for incident in pending:
        notices = [("firing", "notified_open_at")] if incident.notified_open_at is None else []
        if incident.resolved_at is not None:
            notices.append(("resolved", "notified_resolved_at"))
        for state, column in notices:
            body = payload(incident, state)
            if not _post(url, body):
                session.flush()
                return sent
            setattr(incident, column, now)
            sent.append(body)
    session.flush()
    return sent


def check_alerts(
    session: Session, client: redis.Redis, now: dt.datetime, settings: Settings
) -> dict[str, Any]:
    """One check: evaluate, record, notify. Checks that overlap (a slow one and the next
    minute's) take turns, so an incident is never opened or posted twice."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('monitoring.check_alerts'))"))
    found = evaluate(session, client, now, settings)
    changes = record_incidents(session, now, found)
    sent = notify(session, now, settings)
    return {
        **changes,
        "holding": sorted(c.alert for c in found.holding),
        "notified": [f"{body['alert']}:{body['state']}" for body in sent],
    }
