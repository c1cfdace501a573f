"""Leases, heartbeats and the broker's epoch, and what the recovery does with them.

Driven without a worker, against a Redis database of their own (the session's test worker
keeps its own heartbeat and epoch in the shared one). What a real worker does with them
(a killed worker's message back within a lease, a live one's never) is in
tests/system/test_worker_loss.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from db.models import (
    BackgroundTask,
    BrokerReset,
    ScheduleEntry,
    ScheduleFire,
    TaskRun,
    TaskRunCommit,
)
from db.session import get_engine, make_engine
from tests import factories as f
from worker import liveness
from worker.recovery import census
from worker.recovery.broker_reset import (
    fan_outs_cut_short,
    recover_from_broker_reset,
    scheduled_runs_lost,
)
from worker.recovery.census import republish_unheld
from worker.recovery.rescue import rescue
from worker.settings import get_settings

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
LEASE = get_settings().worker_lease_seconds
INDEX = "unacked_index"


@pytest.fixture
def broker() -> Iterator[redis_lib.Redis]:
    url = make_url(os.environ["REDIS_URL"])
    own = url.set(database=str((int(url.database or 0) + 9) % 16))
    client = redis_lib.Redis.from_url(own.render_as_string(hide_password=False))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def epoch_began(client: redis_lib.Redis, at: dt.datetime) -> None:
    client.set(liveness.EPOCH_KEY, f"{at.timestamp():.3f}:0123456789ab")


def test_a_renewal_stamps_held_messages_and_leaves_acknowledged_ones_out(
    broker: redis_lib.Redis,
) -> None:
    broker.zadd(INDEX, {"held": 100.0, "other-workers": 100.0})

    liveness.stamp(broker, INDEX, ["held", "acknowledged-meanwhile"], now=500.0)

    assert broker.zscore(INDEX, "held") == 500.0
    assert broker.zscore(INDEX, "other-workers") == 100.0
    # An acknowledged message is not in the index any more, and is not put back.
    assert broker.zscore(INDEX, "acknowledged-meanwhile") is None


def test_only_the_first_worker_to_find_redis_without_an_epoch_starts_a_new_one(
    broker: redis_lib.Redis,
) -> None:
    first = liveness.new_epoch(broker, now=1000.0)
    second = liveness.new_epoch(broker, now=1001.0)

    assert first is not None and first.startswith("1000.000:")
    assert second is None
    assert liveness.epoch_age(broker, now=1030.0) == pytest.approx(30.0)


def test_a_worker_is_alive_for_one_lease_after_its_last_heartbeat(
    broker: redis_lib.Redis,
) -> None:
    liveness.beat_heart(broker, "analysis@up", lease_seconds=60, info={})

    assert liveness.alive(broker, ["analysis@up", "analysis@gone"]) == {
        "analysis@up": True,
        "analysis@gone": False,
    }
    assert 0 < broker.ttl(liveness.HEARTBEAT_PREFIX + "analysis@up") <= 60
    assert liveness.live_workers(broker) == ["analysis@up"]


def processing(session: Any, track: Any, host: str, *, attempts: int = 1) -> BackgroundTask:
    row = BackgroundTask(
        task_type="energy_analysis",
        track_id=track.id,
        status="processing",
        attempts=attempts,
        started_at=NOW - dt.timedelta(minutes=2),
        enqueued_at=NOW - dt.timedelta(minutes=2),
        celery_task_id=f"message-of-{track.id}",
        worker_host=host,
    )
    session.add(row)
    return row


def test_rescue_requeues_a_dead_workers_rows_at_once_and_leaves_a_live_workers(
    session: Any, app: Any, broker: redis_lib.Redis
) -> None:
    epoch_began(broker, NOW - dt.timedelta(hours=1))
    liveness.beat_heart(broker, "analysis@up", LEASE, {})
    artist = f.artist(session)
    a, b, c = (f.track(session, artist) for _ in range(3))
    # Two minutes in: far inside the analysis family's 10-minute hard limit.
    orphaned = processing(session, a, "analysis@gone")
    exhausted = processing(session, b, "analysis@gone", attempts=3)
    running = processing(session, c, "analysis@up")
    session.commit()

    report = rescue(session, app, broker, NOW, get_settings())
    session.commit()

    assert (report["requeued"], report["failed"], report["dead_workers"]) == (1, 1, 1)
    for row in (orphaned, exhausted, running):
        session.refresh(row)
    assert (orphaned.status, orphaned.enqueued_at) == ("pending", None)
    assert "claimed by analysis@gone" in orphaned.error_message
    assert exhausted.status == "failed"
    assert running.status == "processing"


@pytest.mark.committed
def test_rescue_skips_a_row_locked_mid_commit_and_takes_it_once_the_lock_is_gone(
    session: Any, app: Any, broker: redis_lib.Redis
) -> None:
    epoch_began(broker, NOW - dt.timedelta(hours=1))
    artist = f.artist(session)
    locked = processing(session, f.track(session, artist), "analysis@cut-off")
    free = processing(session, f.track(session, artist), "analysis@cut-off")
    session.commit()
    # The cut-off worker's completion: sent, its row locked, its COMMIT never arrived.
    with get_engine().connect() as cut_off:
        cut_off.execute(
            text("UPDATE background_tasks SET result = '{}' WHERE id = :id"), {"id": locked.id}
        )
        session.execute(text("SET LOCAL lock_timeout = '5s'"))  # a wait would fail the test

        first = rescue(session, app, broker, NOW, get_settings())
        session.commit()
        cut_off.rollback()  # the server ended that session
    second = rescue(session, app, broker, NOW, get_settings())
    session.commit()

    assert (first["requeued"], second["requeued"]) == (1, 1)
    for row in (locked, free):
        session.refresh(row)
    assert (locked.status, free.status) == ("pending", "pending")


def test_the_server_ends_a_session_left_idle_inside_a_transaction() -> None:
    engine = make_engine(get_settings().database_url, idle_in_transaction_seconds=0.5)
    try:
        with engine.connect() as silent:
            silent.execute(text("SELECT 1"))  # a transaction is open from here
            time.sleep(1.5)

            with pytest.raises(OperationalError):
                silent.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def test_rescue_does_not_judge_workers_within_one_lease_of_a_new_epoch(
    session: Any, app: Any, broker: redis_lib.Redis
) -> None:
    # Redis just lost its data, heartbeats with it: live workers have not all written
    # theirs again yet, so a missing heartbeat proves nothing.
    epoch_began(broker, NOW - dt.timedelta(seconds=LEASE / 2))
    row = processing(session, f.track(session, f.artist(session)), "analysis@quiet")
    session.commit()

    report = rescue(session, app, broker, NOW, get_settings())
    session.commit()

    assert report["dead_workers"] == 0
    session.refresh(row)
    assert row.status == "processing"


def started_run(session: Any, task_id: str, host: str, *, age: dt.timedelta) -> TaskRun:
    run = TaskRun(
        task_id=task_id,
        task_name="listening.aggregate",
        status="started",
        started_at=NOW - age,
        worker_host=host,
    )
    session.add(run)
    return run


def test_rescue_marks_a_dead_workers_runs_lost_unless_their_work_committed(
    session: Any, app: Any, broker: redis_lib.Redis
) -> None:
    epoch_began(broker, NOW - dt.timedelta(hours=1))
    liveness.beat_heart(broker, "stats@up", LEASE, {})
    minutes = dt.timedelta(minutes=5)
    died = started_run(session, "died", "stats@gone", age=minutes)
    committed = started_run(session, "committed", "stats@gone", age=minutes)
    alive = started_run(session, "alive", "stats@up", age=minutes)
    session.flush()
    session.add(TaskRunCommit(run_key=committed.run_key, committed_at=NOW - minutes / 2))
    session.commit()

    report = rescue(session, app, broker, NOW, get_settings())
    session.commit()

    assert report["runs_lost"] == 2
    for run in (died, committed, alive):
        session.refresh(run)
    assert (died.status, died.error) == (
        "lost",
        "its worker stats@gone stopped renewing its lease (presumed dead)",
    )
    assert committed.status == "success"
    assert alive.status == "started"


def test_after_a_broker_reset_rows_published_before_it_get_fresh_messages(
    session: Any, app: Any
) -> None:
    noticed = NOW - dt.timedelta(seconds=5)
    artist = f.artist(session)
    lost_track, fresh_track = (f.track(session, artist) for _ in range(2))
    lost = BackgroundTask(
        task_type="mood_detection", track_id=lost_track.id, enqueued_at=noticed - MINUTE
    )
    fresh = BackgroundTask(
        task_type="mood_detection",
        track_id=fresh_track.id,
        enqueued_at=noticed + dt.timedelta(seconds=1),
    )
    session.add_all([lost, fresh])
    session.commit()
    epoch = f"{noticed.timestamp():.3f}:0123456789ab"

    first = recover_from_broker_reset(session, app, epoch, "default@w1", NOW)
    second = recover_from_broker_reset(session, app, epoch, "default@w2", NOW)
    session.commit()

    assert first["ledger_republished"] == 1
    assert second["ledger_republished"] == 0
    session.refresh(lost)
    session.refresh(fresh)
    assert lost.enqueued_at is None  # the dispatcher publishes it afresh
    assert fresh.enqueued_at is not None
    record = session.scalars(select(BrokerReset)).one()
    assert (record.detected_at, record.detected_by, record.ledger_republished) == (
        noticed,
        "default@w1",
        1,
    )
    assert session.scalar(select(func.count()).select_from(BrokerReset)) == 1


def test_after_a_broker_reset_rows_claimed_before_it_are_requeued(session: Any, app: Any) -> None:
    # Their message went with Redis, and their run was cut off when its connection dropped.
    noticed = NOW - dt.timedelta(seconds=5)
    artist = f.artist(session)
    before = processing(session, f.track(session, artist), "analysis@up")
    after = processing(session, f.track(session, artist), "analysis@up")
    after.started_at = noticed + dt.timedelta(seconds=1)
    session.commit()

    recover_from_broker_reset(session, app, f"{noticed.timestamp():.3f}:0123456789ab", None, NOW)
    session.commit()

    session.refresh(before)
    session.refresh(after)
    assert (before.status, before.enqueued_at) == ("pending", None)
    assert "lost with Redis's data during attempt 1" in before.error_message
    assert after.status == "processing"


def test_after_a_broker_reset_runs_started_before_it_that_never_finished_are_lost(
    session: Any, app: Any
) -> None:
    noticed = NOW - dt.timedelta(seconds=5)
    cut_off = started_run(session, "cut-off", "stats@up", age=dt.timedelta(minutes=1))
    later = started_run(session, "later", "stats@up", age=dt.timedelta(seconds=1))
    session.commit()

    report = recover_from_broker_reset(
        session, app, f"{noticed.timestamp():.3f}:0123456789ab", None, NOW
    )
    session.commit()

    assert report["runs_lost"] == 1
    session.refresh(cut_off)
    session.refresh(later)
    assert (cut_off.status, later.status) == ("lost", "started")
    assert cut_off.error == "its record was lost with Redis's data (broker reset)"


def test_the_census_republishes_only_rows_whose_message_redis_no_longer_holds(
    session: Any, broker: redis_lib.Redis
) -> None:
    artist = f.artist(session)
    published = NOW - dt.timedelta(minutes=2)
    rows = {
        where: BackgroundTask(
            task_type="mood_detection",
            track_id=f.track(session, artist).id,
            enqueued_at=published,
            celery_task_id=f"message-{where}",
        )
        for where in ("waiting", "held", "gone")
    }
    session.add_all(rows.values())
    session.commit()
    # What kombu keeps: a queue's list of envelopes, and the unacknowledged ones by tag.
    broker.lpush("analysis:9", json.dumps({"headers": {"id": "message-waiting"}}))
    broker.hset("unacked", "tag-1", json.dumps([{"headers": {"id": "message-held"}}, "", "x"]))

    assert republish_unheld(session, broker, ["analysis"], NOW) == 1
    session.commit()

    for row in rows.values():
        session.refresh(row)
    assert rows["gone"].enqueued_at is None  # the dispatcher publishes it afresh
    assert rows["waiting"].enqueued_at == rows["held"].enqueued_at == published


def test_on_rabbitmq_the_rescue_takes_no_census_of_redis_lists(
    session: Any, app: Any, broker: redis_lib.Redis
) -> None:
    # A row whose message is in no Redis list: on RabbitMQ that is every row (its queues
    # are not in Redis), so the census must not count it lost.
    row = BackgroundTask(
        task_type="mood_detection",
        track_id=f.track(session, f.artist(session)).id,
        enqueued_at=NOW - dt.timedelta(minutes=2),
        celery_task_id="message-in-rabbitmq",
    )
    session.add(row)
    session.commit()
    epoch_began(broker, NOW - dt.timedelta(hours=1))
    on_rabbitmq = get_settings().model_copy(update={"broker_url": "amqp://mq:5672/prod"})

    report = rescue(session, app, broker, NOW, on_rabbitmq)
    session.commit()

    assert report["unheld"] == 0
    session.refresh(row)
    assert row.enqueued_at == NOW - dt.timedelta(minutes=2)


def test_the_census_leaves_rows_alone_while_their_queue_is_too_long_to_read(
    session: Any, broker: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(census, "CENSUS_MAX_MESSAGES", 1)
    row = BackgroundTask(
        task_type="mood_detection",
        track_id=f.track(session, f.artist(session)).id,
        enqueued_at=NOW - dt.timedelta(minutes=2),
        celery_task_id="message-gone",
    )
    session.add(row)
    session.commit()
    broker.lpush("analysis", "{}", "{}")

    assert republish_unheld(session, broker, ["analysis"], NOW) == 0


def test_after_a_broker_reset_a_fan_out_whose_fan_in_never_ran_is_sent_again(
    session: Any,
) -> None:
    noticed = NOW - dt.timedelta(seconds=5)
    hour_ago = NOW - dt.timedelta(hours=1)
    runs = (("cut-short", "fanned_out"), ("done", "fanned_out"), ("done", "success"))
    for task_id, status in runs:
        session.add(
            TaskRun(
                task_id=task_id,
                task_name="playlists.generate_all",
                status=status,
                started_at=hour_ago,
                args_summary=json.dumps({"args": [], "kwargs": {"force": True}}),
            )
        )
    session.commit()

    # What the recovery sends again, after its transaction commits. (Sending it here would
    # hand it to the test worker, whose writes no rollback undoes.)
    assert fan_outs_cut_short(session, noticed) == [("playlists.generate_all", [], {"force": True})]


def test_after_a_broker_reset_each_entrys_newest_scheduled_run_lost_unrun_is_fired_again(
    session: Any,
) -> None:
    noticed = NOW - dt.timedelta(seconds=5)
    entries = {"daily": "run_once", "minutely": "skip", "paused": "run_once", "ran": "run_once"}
    for name, missed in entries.items():
        session.add(
            ScheduleEntry(
                name=name, task="listening.aggregate", cron="0 2 * * *", timezone="UTC",
                missed=missed, paused=name == "paused", origin="operator",
                not_before=NOW - dt.timedelta(days=2), updated_at=NOW, updated_by="test",
            )
        )  # fmt: skip
    session.flush()

    def fire(entry: str, hours_ago: int) -> None:
        at = NOW - dt.timedelta(hours=hours_ago)
        session.add(
            ScheduleFire(
                entry=entry, slot=at, fired_at=at, task="listening.aggregate", args=[],
                kwargs={}, task_id=f"{entry}-{hours_ago}", published_at=at,
            )
        )  # fmt: skip

    for entry in entries:
        fire(entry, 1)
    fire("daily", 3)  # an older slot of the same entry: only the newest runs again
    session.add(
        TaskRun(task_id="ran-1", task_name="listening.aggregate", status="success",
                started_at=NOW - dt.timedelta(minutes=59))
    )  # fmt: skip
    session.commit()

    lost = scheduled_runs_lost(session, noticed)

    assert [(f.entry, f.task_id) for f in lost] == [("daily", "daily-1")]
