"""The background-task ledger without a worker: queueing, collapsing, dispatch, rescue, retention.

The behaviours that need a worker (claiming, priorities, failures, a killed worker) are in
test_ledger_worker.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import make_url, select, text

from db.models import BackgroundTask, TaskRun
from db.session import session_scope
from tasks.automation.history import delete_old_task_runs
from tests import factories as f
from tests.support import broker_is_amqp, waiting_in
from worker.ledger import UnknownTrackError, dispatch_pending, enqueue, enqueue_many
from worker.ledger.rescue import rescue_stuck_tasks
from worker.ledger.tasks import delete_old_background_tasks
from worker.settings import get_settings

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)


def rows(session: Any) -> list[tuple[str, int | None, str]]:
    session.expire_all()
    return [
        (r.task_type, r.track_id, r.status)
        for r in session.scalars(select(BackgroundTask).order_by(BackgroundTask.id))
    ]


def plain_sql(statement: str, *params: Any) -> Any:
    """Run SQL the way another service would: its own connection, no ORM, no Celery."""
    url = make_url(get_settings().database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchone() if cursor.description else None


@pytest.mark.committed
def test_a_track_inserted_by_plain_sql_queues_its_analyses(session: Any) -> None:
    artist = f.artist(session, "Band", genres=["rock"])
    session.commit()

    (uploaded,) = plain_sql(
        "INSERT INTO tracks (title, artist_id, audio_path) VALUES ('Demo', %s, '/audio/demo.wav') "
        "RETURNING id",
        artist.id,
    )
    (catalogued,) = plain_sql(
        "INSERT INTO tracks (title, artist_id, genre) VALUES ('Old hit', %s, 'rock') RETURNING id",
        artist.id,
    )

    # The upload has audio and no genre: all three. The catalogue entry has neither need.
    assert sorted(rows(session)) == [
        ("energy_analysis", uploaded, "pending"),
        ("genre_classification", uploaded, "pending"),
        ("mood_detection", uploaded, "pending"),
    ]
    assert catalogued not in {track for _, track, _ in rows(session)}


@pytest.mark.committed
def test_new_audio_on_an_existing_track_queues_its_audio_analyses_again(session: Any) -> None:
    track = f.track(session, f.artist(session), genre="rock")
    session.commit()

    plain_sql("UPDATE tracks SET audio_path = '/audio/new.wav' WHERE id = %s", track.id)

    assert sorted(rows(session)) == [
        ("energy_analysis", track.id, "pending"),
        ("mood_detection", track.id, "pending"),
    ]


def test_duplicate_requests_collapse_into_the_active_row(session: Any, app: Any) -> None:
    track = f.track(session, f.artist(session), genre="rock")
    first = enqueue(session, app, "energy_analysis", track.id)
    again = enqueue(session, app, "energy_analysis", track.id)
    other_type = enqueue(session, app, "mood_detection", track.id)
    session.rollback()  # nothing published: the messages go only after a commit

    assert first is not None and again is None and other_type is not None


def test_many_tracks_are_queued_in_one_call_each_once(session: Any, app: Any) -> None:
    artist = f.artist(session)
    busy, fresh = f.track(session, artist, genre="rock"), f.track(session, artist, genre="pop")
    enqueue(session, app, "energy_analysis", busy.id)

    new = enqueue_many(session, app, "energy_analysis", [busy.id, fresh.id, fresh.id])

    assert [session.get(BackgroundTask, row_id).track_id for row_id in new] == [fresh.id]
    assert len(session.info["publish_after_commit"]) == 2  # busy's first request, fresh's
    session.rollback()


def test_queueing_many_names_the_tracks_that_do_not_exist(session: Any, app: Any) -> None:
    track = f.track(session, f.artist(session), genre="rock")
    with pytest.raises(UnknownTrackError, match=r"there is no track 424242, 424243$"):
        enqueue_many(session, app, "energy_analysis", [424243, track.id, 424242])
    session.rollback()


def test_a_finished_row_does_not_block_a_new_request(session: Any, app: Any) -> None:
    track = f.track(session, f.artist(session), genre="rock")
    first = enqueue(session, app, "energy_analysis", track.id)
    session.get(BackgroundTask, first).status = "completed"
    session.flush()

    assert enqueue(session, app, "energy_analysis", track.id) not in (None, first)
    session.rollback()


def test_queueing_for_an_unknown_track_or_type_is_a_clear_error(session: Any, app: Any) -> None:
    with pytest.raises(UnknownTrackError, match="there is no track 424242"):
        enqueue(session, app, "energy_analysis", 424242)
    with pytest.raises(Exception, match="unknown background task type 'loudness'"):
        enqueue(session, app, "loudness", 1)
    session.rollback()


@pytest.mark.committed
def test_dispatch_publishes_each_undispatched_row_once_at_its_redis_priority(
    session: Any, app: Any, redis_client: redis_lib.Redis
) -> None:
    artist = f.artist(session)
    _normal, urgent = (f.track(session, artist, genre=None) for _ in range(2))
    session.execute(
        BackgroundTask.__table__.update()
        .where(BackgroundTask.track_id == urgent.id)
        .values(priority=9)
    )
    session.commit()

    published = dispatch_pending(session_scope, app) + dispatch_pending(session_scope, app)

    # Redis serves priority 0 first: ledger priority 9 goes there, the default 0 to step 9.
    # (RabbitMQ's quorum queues have no priorities: both wait in the one queue.)
    assert published == 2
    if broker_is_amqp():
        assert waiting_in(app, "analysis") == 2
    else:
        assert redis_client.llen("analysis") == 1
        assert redis_client.llen("analysis:9") == 1
    assert all(r.enqueued_at is not None for r in session.scalars(select(BackgroundTask)))


@pytest.mark.committed
def test_a_dispatch_that_fails_midway_leaves_every_row_of_its_batch_for_the_next(
    session: Any, app: Any, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    artist = f.artist(session)
    for _ in range(3):
        f.track(session, artist, genre=None)  # each queues its genre classification
    session.commit()
    sent: list[str] = []
    send_task = app.send_task

    def broker_fails_after_one(*args: Any, **kwargs: Any) -> Any:
        if sent:
            raise ConnectionError("the broker went away mid-batch")
        sent.append(kwargs["task_id"])
        return send_task(*args, **kwargs)

    monkeypatch.setattr(app, "send_task", broker_fails_after_one)
    with pytest.raises(ConnectionError):
        dispatch_pending(session_scope, app)
    monkeypatch.undo()

    # Nothing looks published that was not: the one message that went out has a twin
    # coming, and whichever claims the row first runs it.
    assert all(r.enqueued_at is None for r in session.scalars(select(BackgroundTask)))
    assert dispatch_pending(session_scope, app) == 3
    assert waiting_in(app, "analysis") == 4


def orphan(session: Any, track: Any, *, attempts: int, started: dt.datetime) -> BackgroundTask:
    row = BackgroundTask(
        task_type="energy_analysis",
        track_id=track.id,
        status="processing",
        attempts=attempts,
        started_at=started,
        enqueued_at=started,
        worker_host="analysis@lost-host",
    )
    session.add(row)
    return row


def test_rescue_requeues_orphans_past_the_time_limit_and_fails_exhausted_ones(
    session: Any, app: Any
) -> None:
    artist = f.artist(session)
    a, b, c = (f.track(session, artist) for _ in range(3))
    # The analysis family's hard limit is 10 minutes: past it no run is alive.
    requeued = orphan(session, a, attempts=1, started=NOW - 11 * MINUTE)
    exhausted = orphan(session, b, attempts=3, started=NOW - 11 * MINUTE)
    running = orphan(session, c, attempts=1, started=NOW - 9 * MINUTE)
    session.commit()

    report = rescue_stuck_tasks(session, app, NOW, get_settings())
    session.commit()

    assert report == {"failed": 1, "requeued": 1, "republished": 0}
    for row in (requeued, exhausted, running):
        session.refresh(row)
    assert (requeued.status, requeued.attempts, requeued.enqueued_at) == ("pending", 1, None)
    assert "worker lost during attempt 1" in requeued.error_message
    assert exhausted.status == "failed"
    assert "attempt 3 of 3" in exhausted.error_message
    assert "analysis@lost-host" in exhausted.error_message
    assert running.status == "processing"


def test_rescue_republishes_pending_rows_whose_message_is_older_than_the_threshold(
    session: Any, app: Any
) -> None:
    artist = f.artist(session)
    lost_track, waiting_track = (f.track(session, artist) for _ in range(2))
    lost = BackgroundTask(
        task_type="mood_detection", track_id=lost_track.id, enqueued_at=NOW - 16 * MINUTE
    )
    waiting = BackgroundTask(
        task_type="mood_detection", track_id=waiting_track.id, enqueued_at=NOW - 14 * MINUTE
    )
    session.add_all([lost, waiting])
    session.commit()

    assert rescue_stuck_tasks(session, app, NOW, get_settings())["republished"] == 1
    session.commit()

    session.refresh(lost)
    session.refresh(waiting)
    assert lost.enqueued_at is None  # the dispatcher publishes it afresh
    assert waiting.enqueued_at == NOW - 14 * MINUTE


def finished(track: Any, status: str, age: dt.timedelta) -> BackgroundTask:
    return BackgroundTask(
        task_type="energy_analysis",
        track_id=track.id,
        status=status,
        created_at=NOW - age,
        completed_at=NOW - age,
    )


def test_retention_deletes_completed_after_30_days_and_failed_after_90(session: Any) -> None:
    track = f.track(session, f.artist(session))
    keep = [
        finished(track, "completed", 29 * DAY),
        finished(track, "failed", 31 * DAY),
        finished(track, "failed", 89 * DAY),
    ]
    drop = [finished(track, "completed", 31 * DAY), finished(track, "failed", 91 * DAY)]
    session.add_all([*keep, *drop])
    session.commit()

    report = delete_old_background_tasks(session, NOW, get_settings())

    assert report == {"completed": 1, "failed": 1}
    left = set(session.scalars(select(BackgroundTask.id)))
    assert left == {row.id for row in keep}


def test_retention_deletes_in_batches_until_none_is_left(
    session: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.ledger.retention

    monkeypatch.setattr(worker.ledger.retention, "BATCH", 2)
    track = f.track(session, f.artist(session))
    session.add_all(finished(track, "completed", 40 * DAY) for _ in range(5))
    session.commit()

    assert delete_old_background_tasks(session, NOW, get_settings())["completed"] == 5


def test_run_history_older_than_its_retention_is_deleted(session: Any) -> None:
    for age in (29 * DAY, 31 * DAY):
        session.add(
            TaskRun(task_id=str(age), task_name="x.y", status="success", started_at=NOW - age)
        )
    session.commit()

    assert delete_old_task_runs(session, NOW, get_settings()) == 1
    assert session.scalars(select(TaskRun.task_id)).all() == [str(29 * DAY)]


def test_ledger_commits_do_not_wait_for_the_disk_and_other_commits_do() -> None:
    from db.session import get_engine, relaxed_engine

    with relaxed_engine().connect() as relaxed, get_engine().connect() as ordinary:
        assert relaxed.scalar(text("SHOW synchronous_commit")) == "off"
        assert ordinary.scalar(text("SHOW synchronous_commit")) == "on"
