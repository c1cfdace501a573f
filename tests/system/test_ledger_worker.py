"""The ledger through real worker processes: claims, priorities, failures, a killed worker.

Each test starts its own ``celery worker`` subprocess on the analysis queue (the in-process
test worker leaves that queue alone), so it decides when a backlog is taken and can kill
the worker mid-task.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from db.models import BackgroundTask, TaskRun, Track
from db.session import get_engine
from tests import audio
from tests import factories as f
from tests.support import needs_redis_broker, wait_for, worker_process
from worker.ledger import enqueue, redis_priority
from worker.ledger.rescue import rescue_stuck_tasks
from worker.settings import get_settings


@pytest.fixture
def clicks(tmp_path: Path) -> str:
    return str(audio.write(tmp_path / "clicks.wav", audio.click_track(120, duration=8)))


def ledger(session: Any, **where: Any) -> list[BackgroundTask]:
    session.expire_all()
    query = select(BackgroundTask).filter_by(**where).order_by(BackgroundTask.id)
    return list(session.scalars(query))


def runs(session: Any, task_id: str) -> list[str]:
    query = select(TaskRun.status).where(TaskRun.task_id == task_id).order_by(TaskRun.id)
    return list(session.scalars(query))


def settled(session: Any, **where: Any) -> list[BackgroundTask]:
    found = ledger(session, **where)
    return found if found and all(r.status in ("completed", "failed") for r in found) else []


def finished_analysis_runs(session: Any) -> list[TaskRun]:
    session.expire_all()
    query = select(TaskRun).where(
        TaskRun.task_name.like("analysis.%"), TaskRun.finished_at.is_not(None)
    )
    return list(session.scalars(query))


def one_energy_row(session: Any, app: Any, audio_path: str) -> tuple[Track, int]:
    """A track and one queued energy analysis of it (the insert trigger's rows removed)."""
    track = f.track(session, f.artist(session), audio_path=audio_path, genre="rock")
    session.execute(text("DELETE FROM background_tasks"))
    row_id = enqueue(session, app, "energy_analysis", track.id)
    session.commit()
    assert row_id is not None
    return track, row_id


def test_a_track_inserted_by_plain_sql_is_analysed_within_seconds(
    session: Any, app: Any, clicks: str
) -> None:
    artist = f.artist(session, "Band", genres=["rock"])
    session.commit()

    with worker_process(app, "analysis", concurrency=2):
        with get_engine().begin() as conn:  # as another service would: one INSERT
            track_id = conn.scalar(
                text(
                    "INSERT INTO tracks (title, artist_id, audio_path) "
                    "VALUES ('Demo', :artist, :path) RETURNING id"
                ),
                {"artist": artist.id, "path": clicks},
            )
        done = wait_for(lambda: settled(session, track_id=track_id), timeout=30)

    assert sorted((r.task_type, r.status, r.attempts) for r in done) == [
        ("energy_analysis", "completed", 1),
        ("genre_classification", "completed", 1),
        ("mood_detection", "completed", 1),
    ]
    # Each run's row says its work committed (the marker goes with the completion).
    finished = wait_for(lambda: len(got := finished_analysis_runs(session)) == 3 and got)
    assert [(run.status, run.committed_at is not None) for run in finished] == [
        ("success", True)
    ] * 3
    track = session.get(Track, track_id)
    session.refresh(track)
    assert track.tempo == pytest.approx(120, abs=2)
    assert track.mood is not None
    assert (track.genre, track.genre_source) == ("rock", "artist_evidence")


def test_a_task_whose_body_writes_nothing_completes_its_row(session: Any, app: Any) -> None:
    track = f.track(session, f.artist(session))
    session.execute(text("DELETE FROM background_tasks"))
    # A row without a message, as plain SQL makes one: the worker that knows the type
    # (loaded with the test-only tasks, which this process never registers) publishes it
    # through its outbox dispatcher.
    row_id = session.scalar(
        text(
            "INSERT INTO background_tasks (task_type, track_id) "
            "VALUES ('test_write_nothing', :track) RETURNING id"
        ),
        {"track": track.id},
    )
    session.commit()

    with worker_process(app, "analysis", app_module="tests.system.extra_tasks"):
        (done,) = wait_for(lambda: settled(session, id=row_id))
        finished = wait_for(lambda: len(got := finished_analysis_runs(session)) == 1 and got)

    assert (done.status, done.attempts) == ("completed", 1)
    assert done.result == {"wrote": "nothing", "track_id": track.id}
    assert [(run.status, run.committed_at is not None) for run in finished] == [("success", True)]


def test_a_run_whose_claim_was_taken_discards_its_work_and_is_recorded_lost(
    session: Any, app: Any
) -> None:
    track = f.track(session, f.artist(session), title="Original")
    session.execute(text("DELETE FROM background_tasks"))
    row_id = session.scalar(
        text(
            "INSERT INTO background_tasks (task_type, track_id) "
            "VALUES ('test_lose_claim', :track) RETURNING id"
        ),
        {"track": track.id},
    )
    session.commit()

    with worker_process(app, "analysis", app_module="tests.system.extra_tasks"):
        (run,) = wait_for(lambda: len(got := finished_analysis_runs(session)) == 1 and got)

    session.expire_all()
    row = session.get(BackgroundTask, row_id)
    assert row is not None
    # The second message owns the row now; the late run's completion and write are undone.
    assert (row.status, row.celery_task_id) == ("processing", "the second message")
    assert session.scalar(text("SELECT title FROM tracks WHERE id = :id"), {"id": track.id}) == (
        "Original"
    )
    assert (run.status, run.error, run.committed_at) == ("lost", None, None)


def test_a_message_delivered_twice_does_the_work_once(session: Any, app: Any, clicks: str) -> None:
    track = f.track(session, f.artist(session), audio_path=clicks, genre="rock")
    session.execute(text("DELETE FROM background_tasks"))  # only the row made below
    row_id = enqueue(session, app, "energy_analysis", track.id)
    session.commit()
    row = session.get(BackgroundTask, row_id)
    # The same message again, as a redelivery or a sender's retry would bring it.
    app.send_task(
        "analysis.energy_analysis",
        args=(track.id,),
        kwargs={"background_task_id": row_id},
        task_id=row.celery_task_id,
        priority=redis_priority(0),
    )

    with worker_process(app, "analysis", concurrency=1):
        wait_for(
            lambda: len(runs(session, row.celery_task_id)) == 2 and settled(session, id=row_id)
        )
        wait_for(lambda: "started" not in runs(session, row.celery_task_id))

    (done,) = ledger(session, id=row_id)
    assert (done.status, done.attempts) == ("completed", 1)
    assert sorted(runs(session, row.celery_task_id)) == ["duplicate", "success"]


@needs_redis_broker("RabbitMQ's quorum queues (3.10) have no message priorities")
def test_a_backlog_is_taken_most_urgent_first(session: Any, app: Any, clicks: str) -> None:
    artist = f.artist(session)
    tracks = [f.track(session, artist, audio_path=clicks, genre="rock") for _ in range(6)]
    session.execute(text("DELETE FROM background_tasks"))
    # Queued in the wrong order: the three normal ones first, then three urgent ones.
    for i, track in enumerate(tracks):
        enqueue(session, app, "energy_analysis", track.id, priority=0 if i < 3 else 9)
    session.commit()

    with worker_process(app, "analysis", concurrency=1):
        done = wait_for(lambda: len(settled(session)) == 6 and settled(session), timeout=60)

    taken = [r.priority for r in sorted(done, key=lambda r: r.started_at)]
    assert taken == [9, 9, 9, 0, 0, 0]


def test_a_permanent_failure_fails_at_once_with_its_reason(
    session: Any, app: Any, tmp_path: Path
) -> None:
    track = f.track(session, f.artist(session), audio_path=str(tmp_path / "gone.wav"), genre="rock")
    session.execute(text("DELETE FROM background_tasks"))
    row_id = enqueue(session, app, "energy_analysis", track.id)
    session.commit()

    with worker_process(app, "analysis"):
        (row,) = wait_for(lambda: settled(session, id=row_id))

    assert (row.status, row.attempts) == ("failed", 1)
    assert "AudioUnreadableError: cannot read audio file" in row.error_message
    assert "gone.wav" in row.error_message
    assert runs(session, row.celery_task_id) == ["failure"]


def hold_track_lock(track_id: int, release: threading.Event) -> threading.Thread:
    """Lock the track's row in another transaction until ``release``: the worker's write blocks."""
    locked = threading.Event()

    def hold() -> None:
        with get_engine().begin() as conn:
            conn.execute(text("SELECT 1 FROM tracks WHERE id = :id FOR UPDATE"), {"id": track_id})
            locked.set()
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    locked.wait(10)
    return thread


def blocked_writer_pid() -> int:
    """The backend of the worker waiting on that lock."""
    with get_engine().connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE tracks%'"
                )
            )
            or 0
        )


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_a_transient_database_failure_is_retried_and_completes(
    session: Any, app: Any, clicks: str, release: threading.Event
) -> None:
    track, row_id = one_energy_row(session, app, clicks)
    holder = hold_track_lock(track.id, release)

    with worker_process(app, "analysis"):
        pid = wait_for(blocked_writer_pid)
        # The worker's connection dies mid-task, as in a database failover.
        with get_engine().connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        release.set()
        holder.join()
        (row,) = wait_for(lambda: settled(session, id=row_id), timeout=60)

    assert (row.status, row.attempts) == ("completed", 2)
    assert runs(session, row.celery_task_id) == ["retry", "success"]


def test_a_worker_whose_idle_connection_was_dropped_retries_and_completes(
    session: Any, app: Any, clicks: str
) -> None:
    track, first = one_energy_row(session, app, clicks)

    with worker_process(app, "analysis"):
        wait_for(lambda: settled(session, id=first), timeout=30)
        # Between two runs the database drops every idle connection (a restart behind a
        # proxy, a failover): the one the worker keeps for its ledger runs included.
        with get_engine().connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state = 'idle'"
                )
            )
        second = enqueue(session, app, "mood_detection", track.id)
        session.commit()
        (row,) = wait_for(lambda: settled(session, id=second), timeout=60)

    assert row.status == "completed"
    # Its first run found the connection dead (a transient error) and was retried.
    assert wait_for(lambda: runs(session, row.celery_task_id) == ["retry", "success"])


def test_a_worker_killed_mid_task_is_rescued_and_completes_exactly_once(
    session: Any, app: Any, clicks: str, release: threading.Event
) -> None:
    track, row_id = one_energy_row(session, app, clicks)
    holder = hold_track_lock(track.id, release)

    with worker_process(app, "analysis") as doomed:
        wait_for(blocked_writer_pid)
        os.killpg(doomed.pid, signal.SIGKILL)  # the whole host is gone: parent and child
        doomed.wait()
    release.set()
    holder.join()
    (orphan,) = ledger(session, id=row_id)
    assert orphan.status == "processing"

    # cleanup.stuck_tasks, once the 10-minute hard limit has passed since the claim.
    later = orphan.started_at + dt.timedelta(minutes=11)
    assert rescue_stuck_tasks(session, app, later, get_settings())["requeued"] == 1
    session.commit()

    with worker_process(app, "analysis"):  # its dispatcher publishes the row afresh
        (row,) = wait_for(lambda: settled(session, id=row_id), timeout=60)

    assert (row.status, row.attempts) == ("completed", 2)
    assert "worker lost during attempt 1" not in (row.error_message or "")
    session.refresh(track)
    assert track.tempo == pytest.approx(120, abs=2)
    finished = session.scalars(
        select(TaskRun.status).where(
            TaskRun.task_name == "analysis.energy_analysis", TaskRun.status == "success"
        )
    ).all()
    assert finished == ["success"]


def test_a_by_name_message_without_a_row_gets_one_and_runs_once(
    session: Any, app: Any, clicks: str
) -> None:
    track = f.track(session, f.artist(session), audio_path=clicks, genre="rock")
    session.execute(text("DELETE FROM background_tasks"))
    session.commit()

    # Another service, knowing only the public name and the track id.
    sent = app.send_task("analysis.energy_analysis", kwargs={"track_id": track.id})

    with worker_process(app, "analysis"):
        (row,) = wait_for(lambda: settled(session, track_id=track.id), timeout=60)

    assert (row.task_type, row.status, row.attempts) == ("energy_analysis", "completed", 1)
    assert row.celery_task_id == sent.id
