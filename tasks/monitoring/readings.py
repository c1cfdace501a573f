"""What the monitoring reads: the facts both ``/metrics`` (``console.metrics``) and the
alert check (``tasks.monitoring.alerts``) are made of, so the two never disagree.

Every reading is cheap on a large database (the scrape target is 50 ms at 10M plays): an
index probe or a count over the few rows an index picks out (rows still to do, failed
rows, stale rows, an entry's newest fires), or the planner's statistics where only a whole
table would answer exactly (completed ledger rows, listens by enrichment status). The
estimates are as fresh as the last ANALYZE, which autovacuum runs as the tables change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.models import ScheduleEntry
from db.queries import queries
from tasks.ingest.control import queued_longer_than
from worker.schedules.store import timing_of
from worker.schedules.timing import latest_slot

SQL = queries("tasks.monitoring", "monitoring")

# Run statuses that end a run badly, and those of runs not finished yet (left out when
# counting failures in a row: a run in progress has not failed; a cut-off run's message
# comes back and runs again).
FAILED = frozenset({"failure", "lost", "refused"})
UNFINISHED = frozenset({"sent", "started", "retry", "cut_off"})
# A missed slot is looked for at most this far back: a cron entry's slots are iterated.
MISSED_LOOKBACK = dt.timedelta(days=8)


def ledger_exact(session: Session) -> dict[tuple[str, str], int]:
    """Pending, processing and failed ledger rows by (task type, status)."""
    return {(row.task_type, row.status): int(row.n) for row in session.execute(SQL["ledger_exact"])}


def estimated_shares(session: Session, table: str, column: str) -> dict[str, int]:
    """Rows of ``table`` per common value of ``column``, from the planner's statistics."""
    rows = session.execute(SQL["estimated_shares"], {"table": table, "column": column})
    return {str(row.value): int(row.n) for row in rows}


def estimated_rows(session: Session, table: str) -> int:
    return int(session.execute(SQL["estimated_rows"], {"table": table}).scalar_one())


def stale_pending(session: Session, now: dt.datetime, older_than: dt.timedelta) -> int:
    return int(session.execute(SQL["stale_pending"], {"before": now - older_than}).scalar_one())


def enrichment_last_progress(session: Session) -> dt.datetime | None:
    value: dt.datetime | None = session.execute(SQL["enrichment_last_progress"]).scalar_one()
    return value


@dataclass(frozen=True)
class DeadLetters:
    total: int
    last_id: int
    latest_at: dt.datetime | None


def dead_letters(session: Session) -> DeadLetters:
    row = session.execute(SQL["dead_letters"]).one()
    return DeadLetters(int(row.total), int(row.last_id), row.latest_at)


@dataclass(frozen=True)
class EntryHealth:
    """One schedule entry, as the alerts see it."""

    entry: str
    task: str
    paused: bool
    last_slot: dt.datetime | None  # the newest slot beat fired
    due_slot: dt.datetime | None  # the newest slot it should have fired by now (grace given)
    last_success_at: dt.datetime | None
    failures_in_a_row: int  # finished runs, newest first, until one did not fail

    @property
    def missed(self) -> bool:
        return self.due_slot is not None and (
            self.last_slot is None or self.due_slot > self.last_slot
        )


def _failures_in_a_row(statuses: list[str]) -> int:
    count = 0
    for status in statuses:
        if status in UNFINISHED:
            continue
        if status not in FAILED:
            break
        count += 1
    return count


def schedule_health(
    session: Session, now: dt.datetime, grace: dt.timedelta, recent: int = 10
) -> list[EntryHealth]:
    """Every entry's newest fire, due slot, newest success (within its last 100 fires) and
    failures in a row (within its last ``recent`` fires)."""
    health = []
    for row in session.execute(SQL["schedule_health"], {"success_window": 100, "recent": recent}):
        due = None
        if not row.paused:
            # The newest slot older than the grace that came after the last fire (or after
            # the entry's timing last changed): beat should have fired it and did not.
            since = max(row.last_slot or row.not_before, row.not_before, now - MISSED_LOOKBACK)
            timing = timing_of(
                ScheduleEntry(cron=row.cron, every_seconds=row.every_seconds, timezone=row.timezone)
            )
            due = latest_slot(timing, since, now - grace) or row.last_slot
        health.append(
            EntryHealth(
                entry=row.name,
                task=row.task,
                paused=row.paused,
                last_slot=row.last_slot,
                due_slot=due,
                last_success_at=row.last_success_at,
                failures_in_a_row=_failures_in_a_row(list(row.recent_statuses)),
            )
        )
    return health


@dataclass(frozen=True)
class WorkflowHealth:
    pending: int
    processing: int
    # The longest-waiting pending execution that is due: one held back by a retry's
    # backoff or a debounce is not waiting yet.
    oldest_due_at: dt.datetime | None
    failed_24h: int  # executions created in the last day that failed (and were not retried)
    unmatched: int  # status changes the dispatcher has not matched yet
    oldest_unmatched_at: dt.datetime | None


def workflow_health(session: Session, now: dt.datetime) -> WorkflowHealth:
    row = session.execute(
        SQL["workflow_health"], {"now": now, "since": now - dt.timedelta(days=1)}
    ).one()
    return WorkflowHealth(
        pending=int(row.pending),
        processing=int(row.processing),
        oldest_due_at=row.oldest_due_at,
        failed_24h=int(row.failed_24h),
        unmatched=int(row.unmatched),
        oldest_unmatched_at=row.oldest_unmatched_at,
    )


@dataclass(frozen=True)
class IngestHealth:
    queued: int
    processing: int
    failed: int
    stale_queued: int  # queued for longer than the stuck alert allows
    oldest_queued_at: dt.datetime | None
    done_last_hour: int
    failed_last_hour: int
    paused: bool


def ingest_health(session: Session, now: dt.datetime, stale_after: dt.timedelta) -> IngestHealth:
    """Media ingest as /metrics and the alert check see it; the stale count is
    ``queued_longer_than``'s, the stuck alert's own."""
    row = session.execute(SQL["ingest_health"], {"since": now - dt.timedelta(hours=1)}).one()
    return IngestHealth(
        queued=int(row.queued),
        processing=int(row.processing),
        failed=int(row.failed),
        stale_queued=queued_longer_than(session, now, stale_after),
        oldest_queued_at=row.oldest_queued_at,
        done_last_hour=int(row.done_last_hour),
        failed_last_hour=int(row.failed_last_hour),
        paused=bool(row.paused),
    )


def as_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value
