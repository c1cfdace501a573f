"""The live schedule's store: reconciling the code's defaults keeps an operator's change,
every change is in the audit trail, and the lease fences a stale leader's fires."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from db.models import ScheduleChange, ScheduleEntry, ScheduleFire
from db.session import autocommit_engine
from worker.schedules.lease import SQL, Lease
from worker.schedules.store import (
    Default,
    delete_entry,
    entry_runs,
    reconcile,
    schedule_view,
    set_entry,
    set_paused,
)
from worker.schedules.timing import ScheduleError, Timing

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
TASKS = {"listening.aggregate", "trending.calculate", "automation.status"}


def defaults(trending_cron: str = "0 */6 * * *") -> dict[str, Default]:
    return {
        "aggregate": Default("listening.aggregate", Timing(cron="0 2 * * *"), "run_once"),
        "trending": Default("trending.calculate", Timing(cron=trending_cron), "run_once"),
    }


def test_reconciling_adds_the_defaults_once(session: Any) -> None:
    first = reconcile(session, defaults(), NOW)
    again = reconcile(session, defaults(), NOW + dt.timedelta(hours=1))

    assert sorted(first.added) == ["aggregate", "trending"]
    assert again.added == again.updated == again.removed == []
    entries = {e.name: e for e in session.scalars(select(ScheduleEntry))}
    assert entries["trending"].cron == "0 */6 * * *" and entries["trending"].origin == "default"
    actions = session.execute(select(ScheduleChange.entry, ScheduleChange.action)).all()
    assert sorted(actions) == [("aggregate", "add"), ("trending", "add")]


def test_reconciling_keeps_an_operators_change_and_applies_a_changed_default(
    session: Any,
) -> None:
    reconcile(session, defaults(), NOW)
    # "change trending to every 3 hours"
    set_entry(
        session,
        "trending",
        "trending.calculate",
        Timing(cron="0 */3 * * *"),
        "ops",
        NOW,
        known_tasks=TASKS,
    )
    set_paused(session, "aggregate", True, "ops", NOW)

    # A deploy changes both defaults.
    changed = {
        **defaults("0 */4 * * *"),
        "aggregate": Default("listening.aggregate", Timing(cron="0 1 * * *"), "run_once"),
    }
    report = reconcile(session, changed, NOW + dt.timedelta(days=1))

    entries = {e.name: e for e in session.scalars(select(ScheduleEntry))}
    assert report.kept_operator_change == ["trending"]
    assert entries["trending"].cron == "0 */3 * * *"  # the operator's, kept
    assert report.updated == ["aggregate"]
    assert entries["aggregate"].cron == "0 1 * * *"  # the new default...
    assert entries["aggregate"].paused  # ...and still paused: pausing is not an edit


def test_a_default_gone_from_the_code_goes_unless_an_operator_edited_it(session: Any) -> None:
    reconcile(session, defaults(), NOW)
    set_entry(
        session,
        "trending",
        "trending.calculate",
        Timing(every_seconds=600),
        "ops",
        NOW,
        known_tasks=TASKS,
    )
    report = reconcile(session, {}, NOW)

    assert report.removed == ["aggregate"]
    [kept] = session.scalars(select(ScheduleEntry)).all()
    assert (kept.name, kept.origin) == ("trending", "operator")


def test_every_change_is_in_the_audit_trail_with_before_and_after(session: Any) -> None:
    set_entry(
        session,
        "status-often",
        "automation.status",
        Timing(every_seconds=60),
        "alice",
        NOW,
        known_tasks=TASKS,
    )
    set_paused(session, "status-often", True, "bob", NOW + dt.timedelta(minutes=1))
    set_paused(session, "status-often", False, "bob", NOW + dt.timedelta(minutes=2))
    delete_entry(session, "status-often", "carol", NOW + dt.timedelta(minutes=3))

    trail = session.scalars(select(ScheduleChange).order_by(ScheduleChange.id)).all()
    assert [(c.action, c.actor) for c in trail] == [
        ("add", "alice"),
        ("pause", "bob"),
        ("resume", "bob"),
        ("delete", "carol"),
    ]
    assert trail[0].before is None and trail[0].after["every_seconds"] == 60
    assert trail[1].before["paused"] is False and trail[1].after["paused"] is True
    assert trail[3].after is None and trail[3].before["task"] == "automation.status"


def test_a_default_cannot_be_deleted_and_an_unknown_task_cannot_be_scheduled(
    session: Any,
) -> None:
    reconcile(session, defaults(), NOW)
    with pytest.raises(ScheduleError, match="pause it instead"):
        delete_entry(session, "trending", "ops", NOW)
    with pytest.raises(ScheduleError, match=r"unknown task .trending\.calcluate."):
        set_entry(
            session,
            "x",
            "trending.calcluate",
            Timing(every_seconds=5),
            "ops",
            NOW,
            known_tasks=TASKS,
        )


def test_the_view_shows_each_entry_with_its_last_run_outcome_and_next_run(
    session: Any,
) -> None:
    reconcile(session, defaults(), NOW)
    session.add(
        ScheduleFire(
            entry="trending",
            slot=NOW,
            task="trending.calculate",
            args=[],
            kwargs={},
            task_id="t-1",
            token=1,
        )
    )
    session.execute(
        text(
            "INSERT INTO task_runs (task_id, task_name, status, started_at, runtime_seconds, "
            "error) VALUES ('t-1', 'trending.calculate', 'failure', :at, 1.5, 'boom')"
        ),
        {"at": NOW},
    )
    set_paused(session, "aggregate", True, "ops", NOW)

    view = {e["entry"]: e for e in schedule_view(session, NOW + dt.timedelta(minutes=5))}

    assert view["trending"]["next_run_at"] == "2026-11-22T18:00:00+00:00"
    assert view["trending"]["last_run"]["status"] == "failure"
    assert view["trending"]["last_run"]["error"] == "boom"
    assert view["aggregate"]["paused"] and view["aggregate"]["next_run_at"] is None
    [run] = entry_runs(session, "trending", 5)
    assert (run["status"], run["runtime_seconds"], run["error"]) == ("failure", 1.5, "boom")


# -- the lease and its fence: committed, since they run in autocommit ------------------


def fire(holder: str, token: int | None, slot: dt.datetime, entry: str = "e") -> list[Any]:
    fires = [
        {
            "entry": entry,
            "slot": slot.isoformat(),
            "task": "automation.status",
            "args": [],
            "kwargs": {},
            "task_id": str(uuid.uuid4()),
        }
    ]
    with autocommit_engine().connect() as conn:
        return conn.execute(
            SQL["fire"], {"fires": json.dumps(fires), "holder": holder, "token": token}
        ).all()


@pytest.mark.committed
def test_a_stale_leader_cannot_fire_and_a_slot_fires_once(session: Any) -> None:
    set_entry(
        session, "e", "automation.status", Timing(every_seconds=1), "ops", NOW, known_tasks=TASKS
    )
    session.commit()
    first = Lease(autocommit_engine(), "beat-a", seconds=1)
    second = Lease(autocommit_engine(), "beat-b", seconds=1)

    assert first.hold() and not second.hold()
    old_token = first.token
    assert len(fire("beat-a", old_token, NOW)) == 1
    assert fire("beat-a", old_token, NOW) == []  # the same slot again: a no-op

    with autocommit_engine().connect() as conn:  # beat-a stalls past its lease
        conn.execute(text("UPDATE beat_leader SET expires_at = clock_timestamp()"))
    assert second.hold()
    assert second.token == old_token + 1  # type: ignore[operator]

    # beat-a wakes up: its token is old, its fires are refused, and it cannot renew.
    assert fire("beat-a", old_token, NOW + dt.timedelta(seconds=1)) == []
    assert not first.hold()
    assert len(fire("beat-b", second.token, NOW + dt.timedelta(seconds=1))) == 1


@pytest.mark.committed
def test_a_paused_entry_fires_nothing_whatever_beat_last_read(session: Any) -> None:
    set_entry(
        session, "e", "automation.status", Timing(every_seconds=1), "ops", NOW, known_tasks=TASKS
    )
    set_paused(session, "e", True, "ops", NOW)
    session.commit()
    lease = Lease(autocommit_engine(), "beat-a", seconds=5)
    assert lease.hold()
    assert fire("beat-a", lease.token, NOW) == []
