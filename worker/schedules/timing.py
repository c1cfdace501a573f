"""When an entry's slots fall, and which of them are due: pure functions of a clock.

A slot is an instant (aware, UTC) at which an entry is due; the pair (entry, slot) is the
key that makes a second publication of the same slot a no-op (``schedule_fires``).

Cron entries are read in the entry's own timezone by wall-clock time, with cronsim, which
follows Debian cron across daylight-saving changes: a wall time that does not exist
(spring forward) fires at the first instant after the gap, so nothing is skipped; a wall
time that happens twice (fall back) fires once, at its first occurrence, unless the hour
field is a wildcard (an hourly or minutely job runs in both passes, as the clock does).
Celery's own ``crontab`` was the other candidate: it computes the next run from the
current offset and is known to skip or double a run on the change days (celery#4006,
#5207); croniter went unmaintained for a while (2024-2025). cronsim is small, has no
dependencies, and is kept by healthchecks.io, whose business is exactly this.

Interval entries (every N seconds) fall on multiples of N seconds since the Unix epoch,
so every beat, whenever it started, computes the same slots; timezones do not apply.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from worker.errors import PermanentError

# run_once: a slot missed while beat was down runs once when beat is back (however many
# slots were missed); skip: it does not, the entry waits for its next slot.
MissedPolicy = Literal["run_once", "skip"]
MISSED_POLICIES: tuple[MissedPolicy, ...] = ("run_once", "skip")
# Slots fired in one pass at most, however far behind a beat is: the newest are kept.
MAX_SLOTS_PER_PASS = 100


class ScheduleError(PermanentError):
    """A cron expression, interval or timezone that cannot be used; says which and why."""


@dataclass(frozen=True)
class Timing:
    """A cron expression in a timezone, or an interval in seconds (exactly one of them)."""

    cron: str | None = None
    every_seconds: int | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every_seconds is None):
            raise ScheduleError("a schedule is a cron expression or an interval, not both")
        if self.every_seconds is not None and self.every_seconds < 1:
            raise ScheduleError(f"an interval is at least 1 second (got {self.every_seconds})")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"unknown timezone {self.timezone!r}") from None
        if self.cron is not None:
            try:
                CronSim(self.cron, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
            except CronSimError as exc:
                raise ScheduleError(f"bad cron expression {self.cron!r}: {exc}") from None

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' {self.timezone}"
        return f"every {self.every_seconds} s"


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("times must be aware")
    return value.astimezone(dt.UTC)


def next_slot(timing: Timing, after: dt.datetime) -> dt.datetime:
    """The first slot strictly after ``after``, in UTC."""
    after = _utc(after)
    if timing.every_seconds is not None:
        step = timing.every_seconds
        return dt.datetime.fromtimestamp((math.floor(after.timestamp() / step) + 1) * step, dt.UTC)
    assert timing.cron is not None
    # cronsim starts from the wall time of ``after``; in the second pass of a repeated hour
    # it may first offer the first pass's time, which is earlier: compared in UTC (aware
    # times in one zone compare by wall time, ignoring fold), such candidates are passed by.
    for candidate in CronSim(timing.cron, after.astimezone(ZoneInfo(timing.timezone))):
        slot = _utc(candidate)
        if slot > after:
            return slot
    raise ScheduleError(f"cron expression {timing.cron!r} has no next run")  # pragma: no cover


def slots_between(
    timing: Timing, after: dt.datetime, until: dt.datetime, limit: int = MAX_SLOTS_PER_PASS
) -> list[dt.datetime]:
    """Slots in ``(after, until]``, oldest first; the newest ``limit`` of them."""
    until = _utc(until)
    if timing.every_seconds is not None:
        # Arithmetic, not iteration: a week of one-second slots is one subtraction.
        step = timing.every_seconds
        last = math.floor(until.timestamp() / step)
        first = max(math.floor(_utc(after).timestamp() / step) + 1, last - limit + 1)
        return [dt.datetime.fromtimestamp(k * step, dt.UTC) for k in range(first, last + 1)]
    slots: list[dt.datetime] = []
    slot = next_slot(timing, after)
    while slot <= until:
        slots.append(slot)
        if len(slots) > limit:
            # A cron entry far behind (a beat down for months): keep scanning cheaply,
            # remembering only the newest.
            del slots[0]
        slot = next_slot(timing, slot)
    return slots


# A daylight-saving change moves a wall time by at most this much (2 h in a few zones).
DST_SHIFT_BOUND = dt.timedelta(hours=3)


def latest_slot(timing: Timing, after: dt.datetime, until: dt.datetime) -> dt.datetime | None:
    """The newest slot in ``(after, until]`` (None if none), the one ``slots_between`` ends
    with, without walking every slot since ``after``: a minutely entry a week behind would
    be ten thousand steps. cronsim steps back from ``until`` to a candidate; the exact
    answer is then walked forward from a bound before it that no DST shift can cross."""
    if timing.every_seconds is not None:
        slots = slots_between(timing, after, until, limit=1)
        return slots[-1] if slots else None
    assert timing.cron is not None
    zone = ZoneInfo(timing.timezone)
    start = _utc(after)
    back = CronSim(timing.cron, _utc(until).astimezone(zone), reverse=True)
    candidate = next(back, None)
    if candidate is not None:
        bound = _utc(candidate) - DST_SHIFT_BOUND
        same_offset = bound.astimezone(zone).utcoffset() == _utc(until).astimezone(zone).utcoffset()
        # No clock change near: the candidate is the slot (walked from just before it).
        # Otherwise walk from the bound, which no DST shift can cross.
        floor = _utc(candidate) - dt.timedelta(microseconds=1) if same_offset else bound
        start = max(start, floor)
    slots = slots_between(timing, start, until, limit=1)
    return slots[-1] if slots else None


def due_slots(
    timing: Timing,
    policy: MissedPolicy,
    since: dt.datetime,
    now: dt.datetime,
    on_time_within: dt.timedelta,
) -> list[dt.datetime]:
    """The slots to fire now, oldest first.

    ``since``: the entry's last fired slot, or when its timing last changed or it was
    resumed (slots before that are not its own). A slot within ``on_time_within`` of
    ``now`` is on time: every such slot fires (a beat that lagged, or a leader that took
    over within the lease bound, fires each one). An older one was missed (beat was down
    past it): ``run_once`` fires the newest missed slot once, if no slot is on time
    (the on-time run is the run on recovery); ``skip`` fires none of them.
    """
    pending = slots_between(timing, since, now)
    on_time = [slot for slot in pending if _utc(now) - slot <= on_time_within]
    missed = pending[: len(pending) - len(on_time)]
    if missed and not on_time and policy == "run_once":
        return [missed[-1]]
    return on_time
