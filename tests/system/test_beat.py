"""Real ``celery -A worker beat`` processes over the live schedule: however many run, each
slot is published once; a SIGKILLed leader is replaced within the bound; a stalled leader
that wakes fires nothing stale; an operator's edit, pause and resume apply live.

The entry under test fires ``enrichment.progress`` every second: its queue has no consumer
here, so every message beat published is still there to be counted, slot by slot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

import beat_schedule
from db.models import ScheduleEntry, ScheduleFire
from db.session import session_scope
from tests.support import stop_process_group, take_message, wait_for
from worker.cli import main
from worker.schedules.store import defaults_from, reconcile, set_entry, set_paused
from worker.schedules.timing import Timing

# Who leads and which slots fire is decided in PostgreSQL; the publish is the plain
# send_task the rest of the RabbitMQ pass exercises.
pytestmark = pytest.mark.broker_independent

LEASE = 2.0  # seconds: takeover within 2 x LEASE
ENTRY = "progress-every-second"
QUEUE = "enrichment"


def prepare(every: int = 1) -> None:
    """The defaults reconciled and paused (their cron slots must not fire mid-test), and
    the entry under test."""
    now = dt.datetime.now(dt.UTC)
    with session_scope() as session:
        reconcile(session, defaults_from(beat_schedule.SCHEDULE, "UTC"), now)
        for name in beat_schedule.SCHEDULE:
            set_paused(session, name, True, "test", now)
        set_entry(
            session,
            ENTRY,
            "enrichment.progress",
            Timing(every_seconds=every),
            "test",
            now,
            known_tasks={"enrichment.progress"},
        )


@contextlib.contextmanager
def beat(log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = log_dir / f"beat-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO"],
            env={**os.environ, "BEAT_LEASE_SECONDS": str(LEASE), "PYTHONUNBUFFERED": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    process.log = log  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)  # a test may have stopped it
            stop_process_group(process, timeout=20)


def fires(session: Any) -> list[ScheduleFire]:
    session.expire_all()
    return list(
        session.scalars(
            select(ScheduleFire).where(ScheduleFire.entry == ENTRY).order_by(ScheduleFire.slot)
        )
    )


def leader(session: Any) -> Any:
    return session.execute(text("SELECT holder, token FROM beat_leader")).one_or_none()


def published_slots(app: Any) -> list[str]:
    slots = []
    while (message := take_message(app, QUEUE)) is not None:
        headers, _ = message
        assert headers["task"] == "enrichment.progress"
        slots.append(headers["schedule_slot"])
    return slots


def assert_each_slot_once(app: Any, session: Any) -> list[dt.datetime]:
    """Every slot from the first fire to the last was published, none twice."""
    published = published_slots(app)
    twice = [slot for slot, n in Counter(published).items() if n > 1]
    assert twice == [], f"published twice: {twice}"
    recorded = [f.slot for f in fires(session)]
    assert sorted(dt.datetime.fromisoformat(s) for s in published) == recorded
    first, last = recorded[0], recorded[-1]
    expected = int((last - first).total_seconds()) + 1
    assert len(recorded) == expected, f"{expected - len(recorded)} slot(s) missing"
    return recorded


def holder_process(session: Any, *beats: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    holder = wait_for(lambda: leader(session), timeout=30).holder
    [process] = [b for b in beats if f":{b.pid}:" in holder]
    return process


def test_two_beats_for_a_minute_publish_every_slot_once(
    app: Any, session: Any, tmp_path: Path
) -> None:
    prepare()
    with beat(tmp_path), beat(tmp_path):
        wait_for(lambda: fires(session), timeout=60)
        time.sleep(60)
    recorded = assert_each_slot_once(app, session)
    assert len(recorded) >= 55
    # The defaults are in the store, as reconciled; none fired while paused.
    names = set(session.scalars(select(ScheduleEntry.name)))
    assert set(beat_schedule.SCHEDULE) <= names
    assert {f.entry for f in session.scalars(select(ScheduleFire))} == {ENTRY}


def test_a_killed_leader_is_replaced_within_twice_the_lease(
    app: Any, session: Any, tmp_path: Path
) -> None:
    prepare()
    with beat(tmp_path) as one, beat(tmp_path) as two:
        wait_for(lambda: len(fires(session)) >= 3, timeout=60)
        victim = holder_process(session, one, two)
        old = leader(session)
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        new = wait_for(
            lambda: (row := leader(session)) is not None and row.token != old.token and row,
            timeout=4 * LEASE,
            interval=0.05,
        )
        took = time.monotonic() - killed_at
        assert took <= 2 * LEASE, f"takeover after {took:.1f} s"
        wait_for(lambda: any(f.token == new.token for f in fires(session)), timeout=5)
        time.sleep(3)
    assert_each_slot_once(app, session)


def test_a_stalled_leader_that_wakes_fires_nothing_stale(
    app: Any, session: Any, tmp_path: Path
) -> None:
    prepare()
    with beat(tmp_path) as one, beat(tmp_path) as two:
        wait_for(lambda: len(fires(session)) >= 3, timeout=60)
        stalled = holder_process(session, one, two)
        old = leader(session)
        os.killpg(stalled.pid, signal.SIGSTOP)  # a long GC pause, a partition
        stopped_at = dt.datetime.now(dt.UTC)
        time.sleep(3 * LEASE)
        new = leader(session)
        assert new.token > old.token and new.holder != old.holder
        os.killpg(stalled.pid, signal.SIGCONT)
        time.sleep(3 * LEASE)  # it wakes believing it leads
        late = [f for f in fires(session) if f.token == old.token and f.fired_at > stopped_at]
        assert late == [], f"the stalled leader fired after its lease: {late}"
        assert leader(session).token == new.token
    assert_each_slot_once(app, session)


def test_an_edit_a_pause_and_a_resume_apply_within_seconds(
    app: Any, session: Any, tmp_path: Path
) -> None:
    prepare()
    cli = CliRunner()
    with beat(tmp_path):
        wait_for(lambda: len(fires(session)) >= 2, timeout=60)

        assert cli.invoke(main, ["schedule", "pause", ENTRY]).exit_code == 0
        paused_at = dt.datetime.now(dt.UTC)
        time.sleep(4)
        assert [f for f in fires(session) if f.fired_at > paused_at] == []

        assert cli.invoke(main, ["schedule", "resume", ENTRY]).exit_code == 0
        resumed_at = dt.datetime.now(dt.UTC)
        wait_for(lambda: [f for f in fires(session) if f.fired_at > resumed_at], timeout=10)
        # Slots that passed while paused did not run.
        assert not [f for f in fires(session) if paused_at < f.slot <= resumed_at]

        edit = cli.invoke(
            main, ["schedule", "set", ENTRY, "--task", "enrichment.progress", "--every", "5"]
        )
        assert edit.exit_code == 0, edit.output
        edited_at = dt.datetime.now(dt.UTC)
        time.sleep(12)
        after = [f.slot for f in fires(session) if f.fired_at > edited_at + dt.timedelta(seconds=3)]
        assert after and all(int(slot.timestamp()) % 5 == 0 for slot in after), after

        listing = cli.invoke(main, ["schedule", "list"])
        assert ENTRY in listing.output and "every 5 s" in listing.output
        history = cli.invoke(main, ["schedule", "history", ENTRY])
        assert "resume" in history.output and "pause" in history.output
    published_slots(app)  # drain
