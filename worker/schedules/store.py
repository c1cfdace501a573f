"""The schedule's entries: reconciling the code's defaults, operators' changes with their
audit trail, and the views (the schedule with last and next runs, an entry's runs).

Functions take their session and clock and never commit: the unit of work is the caller's.
Every change writes a ``schedule_changes`` row in the same transaction (who, when, what the
entry was before and after), so the trail cannot miss a change that happened.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ScheduleChange, ScheduleEntry, ScheduleFire
from db.queries import queries
from worker.errors import PermanentError
from worker.schedules.timing import (
    MISSED_POLICIES,
    MissedPolicy,
    ScheduleError,
    Timing,
    next_slot,
)

log = logging.getLogger(__name__)
SQL = queries("worker.schedules", "schedules")
DEFAULTS_ACTOR = "defaults (beat_schedule.py)"


class UnknownEntryError(PermanentError):
    pass


@dataclass(frozen=True)
class Default:
    """One entry of the code's default schedule (``beat_schedule.SCHEDULE``)."""

    task: str
    timing: Timing
    missed: MissedPolicy
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        canonical = json.dumps(
            [
                self.task,
                self.args,
                self.kwargs,
                self.timing.cron,
                self.timing.every_seconds,
                self.timing.timezone,
                self.missed,
            ],
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def defaults_from(schedule: Mapping[str, Mapping[str, Any]], timezone: str) -> dict[str, Default]:
    """``beat_schedule.SCHEDULE`` as Defaults, in ``timezone`` (TIMEZONE); ScheduleError
    names the entry that is wrong."""
    defaults = {}
    for name, spec in schedule.items():
        try:
            missed = spec["missed"]
            if missed not in MISSED_POLICIES:
                raise ScheduleError(f"missed must be one of {', '.join(MISSED_POLICIES)}")
            defaults[name] = Default(
                task=spec["task"],
                timing=Timing(
                    cron=spec.get("cron"), every_seconds=spec.get("every"), timezone=timezone
                ),
                missed=missed,
                args=list(spec.get("args", [])),
                kwargs=dict(spec.get("kwargs", {})),
            )
        except (ScheduleError, KeyError) as exc:
            raise ScheduleError(f"schedule entry {name!r}: {exc}") from None
    return defaults


def timing_of(entry: ScheduleEntry) -> Timing:
    return Timing(cron=entry.cron, every_seconds=entry.every_seconds, timezone=entry.timezone)


def snapshot(entry: ScheduleEntry | None) -> dict[str, Any] | None:
    """An entry as the audit trail keeps it."""
    if entry is None:
        return None
    return {
        "task": entry.task,
        "args": entry.args,
        "kwargs": entry.kwargs,
        "cron": entry.cron,
        "every_seconds": entry.every_seconds,
        "timezone": entry.timezone,
        "missed": entry.missed,
        "paused": entry.paused,
        "origin": entry.origin,
        "edited": entry.edited,
    }


def _audit(
    session: Session,
    name: str,
    actor: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now: dt.datetime,
) -> None:
    session.add(
        ScheduleChange(entry=name, actor=actor, at=now, action=action, before=before, after=after)
    )


def _apply(entry: ScheduleEntry, default: Default, now: dt.datetime) -> None:
    timing = default.timing
    if (entry.cron, entry.every_seconds, entry.timezone) != (
        timing.cron,
        timing.every_seconds,
        timing.timezone,
    ):
        entry.not_before = now  # a new timing's slots start now
    entry.task = default.task
    entry.args = default.args
    entry.kwargs = default.kwargs
    entry.cron = default.timing.cron
    entry.every_seconds = default.timing.every_seconds
    entry.timezone = default.timing.timezone
    entry.missed = default.missed
    entry.default_fingerprint = default.fingerprint()


@dataclass
class ReconcileReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept_operator_change: list[str] = field(default_factory=list)


def reconcile(
    session: Session, defaults: Mapping[str, Default], now: dt.datetime
) -> ReconcileReport:
    """Bring the code's defaults into the store without overwriting an operator's change.

    A default not yet stored is added; one whose code changed is applied again unless an
    operator edited the entry (or added an entry of that name), which is kept and logged;
    pausing is not an edit, and a paused entry stays paused. A default gone from the code
    is removed, unless an operator edited it: then it stays, as the operator's.
    """
    session.execute(SQL["lock_reconcile"])
    report = ReconcileReport()
    stored = {e.name: e for e in session.scalars(select(ScheduleEntry).with_for_update())}
    for name, default in defaults.items():
        entry = stored.get(name)
        if entry is None:
            entry = ScheduleEntry(
                name=name,
                origin="default",
                edited=False,
                paused=False,
                not_before=now,
                updated_at=now,
                updated_by=DEFAULTS_ACTOR,
            )
            _apply(entry, default, now)
            session.add(entry)
            _audit(session, name, DEFAULTS_ACTOR, "add", None, snapshot(entry), now)
            report.added.append(name)
        elif entry.default_fingerprint == default.fingerprint():
            continue
        elif entry.origin == "operator" or entry.edited:
            if name not in report.kept_operator_change:
                log.warning(
                    "schedule entry %s: the code's default differs, the operator's change is kept",
                    name,
                )
            report.kept_operator_change.append(name)
        else:
            before = snapshot(entry)
            _apply(entry, default, now)
            entry.updated_at, entry.updated_by = now, DEFAULTS_ACTOR
            _audit(session, name, DEFAULTS_ACTOR, "update", before, snapshot(entry), now)
            report.updated.append(name)
    for name, entry in stored.items():
        if entry.origin != "default" or name in defaults:
            continue
        before = snapshot(entry)
        if entry.edited:
            entry.origin, entry.default_fingerprint = "operator", None
            _audit(session, name, DEFAULTS_ACTOR, "keep", before, snapshot(entry), now)
        else:
            session.delete(entry)
            _audit(session, name, DEFAULTS_ACTOR, "delete", before, None, now)
            report.removed.append(name)
    session.flush()
    return report


def _get(session: Session, name: str) -> ScheduleEntry:
    entry = session.get(ScheduleEntry, name, with_for_update=True)
    if entry is None:
        names = session.scalars(select(ScheduleEntry.name).order_by(ScheduleEntry.name)).all()
        raise UnknownEntryError(f"no schedule entry {name!r}; entries: {', '.join(names)}")
    return entry


def set_entry(
    session: Session,
    name: str,
    task: str,
    timing: Timing,
    actor: str,
    now: dt.datetime,
    *,
    kwargs: dict[str, Any] | None = None,
    missed: MissedPolicy | None = None,
    known_tasks: Iterable[str],
) -> ScheduleEntry:
    """Add an entry, or change one (a default edited this way is then the operator's to
    keep: reconciling leaves it alone). Its new timing's slots start now."""
    if task not in set(known_tasks):
        raise ScheduleError(f"unknown task {task!r}: a schedule entry runs a public task")
    entry = session.get(ScheduleEntry, name, with_for_update=True)
    before = snapshot(entry)
    if entry is None:
        entry = ScheduleEntry(
            name=name, origin="operator", edited=False, paused=False, missed=missed or "run_once"
        )
        session.add(entry)
    elif entry.origin == "default":
        entry.edited = True
    if before is None or timing_of(entry) != timing:
        entry.not_before = now
    entry.task = task
    entry.args = []
    entry.kwargs = kwargs or {}
    entry.cron, entry.every_seconds, entry.timezone = (
        timing.cron,
        timing.every_seconds,
        timing.timezone,
    )
    if missed is not None:
        entry.missed = missed
    entry.updated_at, entry.updated_by = now, actor
    _audit(session, name, actor, "add" if before is None else "set", before, snapshot(entry), now)
    session.flush()
    return entry


def set_paused(
    session: Session, name: str, paused: bool, actor: str, now: dt.datetime
) -> ScheduleEntry:
    """Pause (no slot fires) or resume (slots from now on fire; those that passed while it
    was paused do not: a pause is not an outage)."""
    entry = _get(session, name)
    before = snapshot(entry)
    if entry.paused == paused:
        return entry
    entry.paused = paused
    if not paused:
        entry.not_before = now
    entry.updated_at, entry.updated_by = now, actor
    _audit(session, name, actor, "pause" if paused else "resume", before, snapshot(entry), now)
    session.flush()
    return entry


def delete_entry(session: Session, name: str, actor: str, now: dt.datetime) -> None:
    """Delete an operator's entry. A default cannot be: it would come back at the next beat
    start; pause it instead (or remove it from beat_schedule.py)."""
    entry = _get(session, name)
    if entry.origin == "default":
        raise ScheduleError(
            f"{name!r} is one of the code's defaults and would come back at the next beat "
            "start: pause it instead, or remove it from beat_schedule.py"
        )
    _audit(session, name, actor, "delete", snapshot(entry), None, now)
    session.delete(entry)
    session.flush()


def record_manual_run(
    session: Session, name: str, task_id: str, actor: str, now: dt.datetime
) -> ScheduleEntry:
    """An operator's ``schedule run``: a fire now, outside the entry's slots (its next slot
    still fires), kept in the audit trail. The caller publishes once this commits."""
    entry = _get(session, name)
    session.add(
        ScheduleFire(
            entry=name,
            slot=now,
            task=entry.task,
            args=entry.args,
            kwargs=entry.kwargs,
            task_id=task_id,
            manual=True,
        )
    )
    _audit(session, name, actor, "run", None, {"task_id": task_id}, now)
    session.flush()
    return entry


def mark_published(session: Session, task_ids: list[str]) -> None:
    session.execute(
        update(ScheduleFire)
        .where(ScheduleFire.task_id.in_(task_ids))
        .values(published_at=dt.datetime.now(dt.UTC))
    )


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def schedule_view(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Every entry: task, schedule, paused, policy, last run with its outcome, next run."""
    last = {row.entry: row for row in session.execute(SQL["last_runs"])}
    view = []
    for entry in session.scalars(select(ScheduleEntry).order_by(ScheduleEntry.name)):
        timing = timing_of(entry)
        run = last.get(entry.name)
        view.append(
            {
                "entry": entry.name,
                "task": entry.task,
                "kwargs": entry.kwargs,
                "schedule": timing.describe(),
                "missed": entry.missed,
                "paused": entry.paused,
                "origin": entry.origin + (" (edited)" if entry.edited else ""),
                "next_run_at": None
                if entry.paused
                else _iso(next_slot(timing, max(now, entry.not_before))),
                "last_run": None
                if run is None
                else {
                    "slot": _iso(run.slot),
                    "fired_at": _iso(run.fired_at),
                    "manual": run.manual,
                    "task_id": run.task_id,
                    # No run yet: its message waits in a queue (or was lost with Redis).
                    "status": run.status or "sent",
                    "started_at": _iso(run.started_at),
                    "runtime_seconds": run.runtime_seconds,
                    "error": run.error,
                },
            }
        )
    return view


def entry_runs(session: Session, name: str, n: int) -> list[dict[str, Any]]:
    """The last ``n`` runs of an entry, newest first: status, duration, error."""
    _get(session, name)
    return [
        {
            "slot": _iso(row.slot),
            "fired_at": _iso(row.fired_at),
            "manual": row.manual,
            "task_id": row.task_id,
            "status": row.status or ("sent" if row.published_at else "not sent"),
            "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at),
            "runtime_seconds": row.runtime_seconds,
            "error": row.error,
            "worker": row.worker_host,
        }
        for row in session.execute(SQL["entry_runs"], {"entry": name, "n": n})
    ]


def entry_changes(session: Session, name: str, n: int) -> list[dict[str, Any]]:
    """The audit trail of one entry (deleted ones too), newest first."""
    changes = session.scalars(
        select(ScheduleChange)
        .where(ScheduleChange.entry == name)
        .order_by(ScheduleChange.at.desc(), ScheduleChange.id.desc())
        .limit(n)
    )
    return [
        {
            "at": _iso(c.at),
            "actor": c.actor,
            "action": c.action,
            "before": c.before,
            "after": c.after,
        }
        for c in changes
    ]
