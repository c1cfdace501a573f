"""When slots fall: cron in the entry's timezone across daylight-saving days, intervals on
the epoch's grid, and which slots a pass fires under each missed-run policy."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from worker.schedules.timing import (
    ScheduleError,
    Timing,
    due_slots,
    latest_slot,
    next_slot,
    slots_between,
)

BERLIN = ZoneInfo("Europe/Berlin")
GRACE = dt.timedelta(seconds=65)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def local(slots: list[dt.datetime]) -> list[str]:
    return [s.astimezone(BERLIN).isoformat() for s in slots]


def test_a_daily_job_in_the_hour_that_does_not_exist_runs_once_right_after_the_gap() -> None:
    # 2026-03-29: Berlin's clocks go from 02:00 to 03:00.
    daily = Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    slots = slots_between(daily, utc(2026, 3, 27, 12), utc(2026, 3, 31, 12))
    assert local(slots) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # not skipped: the first instant after the gap
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_daily_job_in_the_hour_that_happens_twice_runs_once() -> None:
    # 2026-10-25: Berlin's clocks go from 03:00 back to 02:00.
    daily = Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    slots = slots_between(daily, utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert local(slots) == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_from_the_second_pass_of_the_repeated_hour_the_daily_job_waits_for_tomorrow() -> None:
    daily = Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    second_pass_0210 = utc(2026, 10, 25, 1, 10)  # 02:10+01:00, after 02:30+02:00 fired
    assert local([next_slot(daily, second_pass_0210)]) == ["2026-10-26T02:30:00+01:00"]


def test_an_hourly_job_runs_in_both_passes_of_the_repeated_hour() -> None:
    hourly = Timing(cron="30 * * * *", timezone="Europe/Berlin")
    slots = slots_between(hourly, utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 3, 0))
    assert local(slots) == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    assert slots == sorted(set(slots))  # strictly increasing: no slot twice


def test_a_daily_job_at_the_same_wall_time_every_day_of_a_dst_year() -> None:
    daily = Timing(cron="0 3 * * *", timezone="Europe/Berlin")
    slots = slots_between(daily, utc(2026, 1, 1), utc(2027, 1, 1), limit=1000)
    assert len(slots) == 365
    assert {s.astimezone(BERLIN).strftime("%H:%M") for s in slots} == {"03:00"}


def test_an_interval_falls_on_the_epochs_grid_whoever_computes_it() -> None:
    every = Timing(every_seconds=10)
    assert next_slot(every, utc(2026, 1, 1, 0, 0, 3)) == utc(2026, 1, 1, 0, 0, 10)
    assert next_slot(every, utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 20)
    assert slots_between(every, utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 30)) == [
        utc(2026, 1, 1, 0, 0, 10),
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 30),
    ]


def test_the_slot_just_due_fires_under_either_policy() -> None:
    daily = Timing(cron="0 2 * * *")
    for policy in ("run_once", "skip"):
        assert due_slots(daily, policy, utc(2026, 5, 1, 3), utc(2026, 5, 2, 2, 0, 1), GRACE) == [
            utc(2026, 5, 2, 2)
        ]


def test_slots_missed_while_beat_was_down_run_once_or_are_skipped() -> None:
    daily = Timing(cron="0 2 * * *")
    last, back = utc(2026, 5, 1, 2), utc(2026, 5, 4, 9)  # down three nights
    assert due_slots(daily, "run_once", last, back, GRACE) == [utc(2026, 5, 4, 2)]
    assert due_slots(daily, "skip", last, back, GRACE) == []


def test_a_takeover_within_the_grace_fires_every_slot_it_missed_once() -> None:
    every = Timing(every_seconds=1)
    slots = due_slots(every, "skip", utc(2026, 5, 1), utc(2026, 5, 1, 0, 0, 5), GRACE)
    assert slots == [utc(2026, 5, 1, 0, 0, s) for s in range(1, 6)]


def test_nothing_is_due_before_the_entry_began() -> None:
    daily = Timing(cron="0 2 * * *")
    assert due_slots(daily, "run_once", utc(2026, 5, 1, 3), utc(2026, 5, 1, 9), GRACE) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"every_seconds": 0}, "at least 1 second"),
        ({}, "not both"),
    ],
)
def test_a_timing_that_cannot_be_used_says_why(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Timing(**kwargs)  # type: ignore[arg-type]


def dst_changes(zone: str, year: int) -> list[dt.datetime]:
    """The instants (to the hour) at which ``zone``'s UTC offset changes in ``year``."""
    tz = ZoneInfo(zone)
    start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
    hours = [start + dt.timedelta(hours=h) for h in range(8760)]
    return [
        b
        for a, b in itertools.pairwise(hours)
        if a.astimezone(tz).utcoffset() != b.astimezone(tz).utcoffset()
    ]


# Not Australia/Lord_Howe, whose clocks move by 30 minutes: there cronsim's forward walk
# itself skips a slot (0 */6 on 5 April 2026 goes from 00:00 to 12:00), a known gap.
ZONES = ["Europe/Berlin", "America/New_York"]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(
    "cron", ["* * * * *", "30 2 * * *", "0 3 * * *", "*/15 1-3 * * *", "0 */6 * * *"]
)
def test_the_latest_slot_is_the_one_walking_every_slot_ends_with_across_dst(
    zone: str, cron: str
) -> None:
    timing = Timing(cron=cron, timezone=zone)
    # A minutely entry's window is kept short only so the walk it is checked against is.
    window = dt.timedelta(hours=3 if cron.startswith("* ") else 30)
    checked = 0
    for change in dst_changes(zone, 2026):
        for step in range(-36, 37):  # a day either side, every 20 minutes
            until = change + dt.timedelta(minutes=20 * step)
            walked = slots_between(timing, until - window, until, limit=1)
            assert latest_slot(timing, until - window, until) == (walked[-1] if walked else None)
            checked += 1
    assert checked == 2 * 73


def test_the_latest_slot_of_an_empty_window_is_none() -> None:
    daily = Timing(cron="0 3 * * *", timezone="UTC")
    noon = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)

    assert latest_slot(daily, noon - dt.timedelta(hours=14), noon) == noon.replace(hour=3)
    assert latest_slot(daily, noon.replace(hour=3), noon) is None
