"""The beat scheduler the app names (``beat_scheduler``): fires the live schedule from
PostgreSQL, and only while it holds the leader lease.

Each pass (``tick``): renew or try to take the lease (every third of a lease), read the
entries again (every ``RELOAD_SECONDS``, so an operator's edit, pause or resume applies
within seconds, with no restart), and, as leader, fire every due slot through the fenced
``fire`` statement, then publish what it recorded, each message carrying its task id, its
entry and slot. Any number of beats may run; followers only try for the lease, and take
over within a lease and a third of the leader's last renewal. Reconciling the code's
defaults into the store is the first pass's work, not the constructor's: ``celery beat``
builds its scheduler before its start-up checks, and for introspection.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
from celery import Celery
from celery.beat import Scheduler
from sqlalchemy import Row

from db.session import autocommit_engine, session_scope
from worker.schedules.lease import SQL, Lease
from worker.schedules.store import defaults_from, reconcile
from worker.schedules.timing import MissedPolicy, ScheduleError, Timing, due_slots, next_slot
from worker.settings import get_settings

log = logging.getLogger(__name__)

# How often the entries are read again: an operator's change applies within this (plus a
# pass). A read is one indexed query over a few dozen rows.
RELOAD_SECONDS = 2.0
# How long a pass sleeps at most after a database error, before trying again.
RETRY_SECONDS = 1.0
# Wake this long after a slot, so that the slot is in the past when the pass looks.
AFTER_SLOT = 0.005
DATABASE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


@dataclass
class LiveEntry:
    name: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    timing: Timing
    missed: MissedPolicy
    paused: bool
    since: dt.datetime  # the last slot fired, or when its timing began


def on_time_within(lease_seconds: float) -> dt.timedelta:
    """How late a slot may fire and still count as on time: longer than any takeover (a
    follower leads within a lease and a third of the leader's death), so a failover is not
    taken for an outage; older slots follow the entry's missed-run policy."""
    return dt.timedelta(seconds=2 * lease_seconds + RELOAD_SECONDS + 1)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DatabaseScheduler(Scheduler):  # type: ignore[misc]  # Celery ships no type hints
    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self.lease_seconds = settings.beat_lease_seconds
        self.lease = Lease(
            autocommit_engine(),
            holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}",
            seconds=self.lease_seconds,
        )
        self.entries: dict[str, LiveEntry] = {}
        self.reconciled = False
        self.next_lease = self.next_reload = 0.0
        self.unknown_tasks: set[str] = set()
        super().__init__(app, *args, **kwargs)

    # -- Celery's Scheduler interface ------------------------------------------------

    def setup_schedule(self) -> None:
        """Nothing here: see the module docstring."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return self._pass()
        except DATABASE_ERRORS as exc:
            # Without the database nothing can be fired (the fence is there): stand aside,
            # and let a beat that reaches it lead.
            log.warning("beat: database unavailable (%s); trying again", exc.__class__.__name__)
            self.lease.step_down()
            self.next_lease = self.next_reload = 0.0
            return RETRY_SECONDS

    def close(self) -> None:
        try:
            self.lease.release()
        except DATABASE_ERRORS:
            log.warning("beat: could not release the leader lease; it expires by itself")
        super().close()

    @property
    def info(self) -> str:
        return (
            f"    . schedule -> PostgreSQL (schedule_entries), re-read every "
            f"{RELOAD_SECONDS:g} s\n"
            f"    . leader lease -> {self.lease_seconds:g} s, fenced ({self.lease.holder})"
        )

    # -- the pass --------------------------------------------------------------------

    def _pass(self) -> float:
        clock = time.monotonic()
        if not self.reconciled:
            self._reconcile()
            self.reconciled = True
        if clock >= self.next_lease:
            self.lease.hold()
            self.next_lease = clock + self.lease_seconds / 3
        if clock >= self.next_reload:
            self._reload()
            self.next_reload = clock + RELOAD_SECONDS
            if self.lease.held:
                self._publish_orphans()
        now = _utcnow()
        if self.lease.held:
            self._fire(now)
        return self._sleep(now, clock)

    def _reconcile(self) -> None:
        settings = get_settings()
        defaults = defaults_from(self.app.conf.beat_schedule, settings.timezone)
        with session_scope() as session:
            report = reconcile(session, defaults, _utcnow())
        log.info(
            "beat: schedule reconciled with beat_schedule.py: added %s, updated %s, removed "
            "%s, operator's changes kept %s",
            report.added or "none",
            report.updated or "none",
            report.removed or "none",
            report.kept_operator_change or "none",
        )

    def _reload(self) -> None:
        entries = {}
        with autocommit_engine().connect() as conn:
            rows = conn.execute(SQL["live_entries"]).all()
        for row in rows:
            if row.task not in self.app.tasks:
                if row.task not in self.unknown_tasks:
                    log.error("beat: entry %s names an unregistered task %s", row.name, row.task)
                    self.unknown_tasks.add(row.task)
                continue
            try:
                timing = Timing(
                    cron=row.cron, every_seconds=row.every_seconds, timezone=row.timezone
                )
            except ScheduleError as exc:
                log.error("beat: entry %s cannot be scheduled: %s", row.name, exc)
                continue
            since = row.not_before if row.last_slot is None else max(row.last_slot, row.not_before)
            entries[row.name] = LiveEntry(
                row.name, row.task, row.args, row.kwargs, timing, row.missed, row.paused, since
            )
        self.entries = entries

    def _fire(self, now: dt.datetime) -> None:
        grace = on_time_within(self.lease_seconds)
        fires: list[dict[str, Any]] = [
            {
                "entry": entry.name,
                "slot": slot.isoformat(),
                "task": entry.task,
                "args": entry.args,
                "kwargs": entry.kwargs,
                "task_id": str(uuid.uuid4()),
            }
            for entry in self.entries.values()
            if not entry.paused
            for slot in due_slots(entry.timing, entry.missed, entry.since, now, grace)
        ]
        if not fires:
            return
        with autocommit_engine().connect() as conn:
            fired = conn.execute(
                SQL["fire"],
                {
                    "fires": json.dumps(fires),
                    "holder": self.lease.holder,
                    "token": self.lease.token,
                },
            ).all()
            if len(fired) < len(fires):
                leader = conn.execute(SQL["leader"]).one_or_none()
                if leader is None or not (
                    leader.live
                    and leader.holder == self.lease.holder
                    and leader.token == self.lease.token
                ):
                    # Fenced off: another beat leads now. Its fires are the ones that count.
                    log.warning("beat %s: fenced off, another beat leads", self.lease.holder)
                    self.lease.step_down()
                    return
        # Fired here or already fired (by a leader before us, or paused meanwhile): either
        # way these slots are done.
        for fire in fires:
            entry = self.entries[fire["entry"]]
            entry.since = max(entry.since, dt.datetime.fromisoformat(fire["slot"]))
        self._publish(fired)

    def _publish(self, fired: Sequence[Row[Any]]) -> None:
        if not fired:
            return
        with autocommit_engine().connect() as conn:
            claimed = set(
                conn.scalars(
                    SQL["claim_publication"],
                    {
                        "task_ids": [row.task_id for row in fired],
                        "holder": self.lease.holder,
                        "token": self.lease.token,
                    },
                )
            )
            failed = []
            for row in fired:
                if row.task_id not in claimed:
                    continue
                try:
                    self.app.send_task(
                        row.task,
                        args=row.args,
                        kwargs=row.kwargs,
                        task_id=row.task_id,
                        headers={
                            "schedule_entry": row.entry,
                            "schedule_slot": row.slot.isoformat(),
                        },
                    )
                    log.info(
                        "beat: %s fired %s [%s] for %s", row.entry, row.task, row.task_id, row.slot
                    )
                except Exception:
                    log.exception(
                        "beat: could not publish %s for %s; trying again", row.task, row.entry
                    )
                    failed.append(row.task_id)
            if failed:
                conn.execute(SQL["unclaim_publication"], {"task_ids": failed})

    def _publish_orphans(self) -> None:
        """Fires whose leader died between recording and publishing them."""
        with autocommit_engine().connect() as conn:
            orphans = conn.execute(
                SQL["claim_unpublished"],
                {
                    "older_than": self.lease_seconds,
                    "holder": self.lease.holder,
                    "token": self.lease.token,
                },
            ).all()
        for row in orphans:
            log.warning(
                "beat: %s's fire for %s was never published: publishing it", row.entry, row.slot
            )
            self.app.send_task(
                row.task,
                args=row.args,
                kwargs=row.kwargs,
                task_id=row.task_id,
                headers={"schedule_entry": row.entry, "schedule_slot": row.slot.isoformat()},
            )

    def _sleep(self, now: dt.datetime, clock: float) -> float:
        wake = min(self.next_lease, self.next_reload) - clock
        if self.lease.held:
            for entry in self.entries.values():
                if not entry.paused:
                    # Slots older than the grace were fired or skipped by this pass.
                    after = max(entry.since, now - on_time_within(self.lease_seconds))
                    until = (next_slot(entry.timing, after) - now).total_seconds()
                    wake = min(wake, until + AFTER_SLOT)
        return max(0.0, min(wake, float(self.max_interval)))
