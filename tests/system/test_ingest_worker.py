"""Media ingest through real ``celery worker`` subprocesses on the ingest queue: a job row
inserted by plain SQL and a file dropped into the local bucket's ``incoming/`` each end
``done`` within seconds with their track and images; pause and resume; a step that fails
on a real storage fault and resumes; a worker SIGKILLed mid-job; duplicate messages.

The workers share one bucket in a temporary directory (INGEST_URL) and run with a retry
base of seconds and a half-second settle time, so retries and the watcher are observable
here; production's are INGEST_RETRY_BASE_SECONDS (5 s) and INGEST_WATCH_SETTLE_SECONDS
(1 s). Files are 8-second 120 BPM click tracks, made by the tests.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile
from PIL import Image
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.models import IngestJob, TaskRun, Track, TrackImage
from db.session import session_scope
from tasks.ingest import control
from tasks.ingest.storage import INCOMING, Bucket
from tests import audio
from tests.integration.test_ledger import plain_sql
from tests.support import runs_of, wait_for, worker_process

SIZES = (48, 200)  # not the default sizes: the worker's settings are the ones used
LEASE = 4  # seconds: a SIGKILLed worker's message comes back within a test's patience


@pytest.fixture(scope="module")
def ingest_bucket(tmp_path_factory: pytest.TempPathFactory) -> Bucket:
    root = tmp_path_factory.mktemp("ingest-bucket")
    (root / INCOMING).mkdir()
    return Bucket(root.as_uri())


@pytest.fixture
def bucket(ingest_bucket: Bucket) -> Iterator[Bucket]:
    """The module's bucket, emptied after each test (job ids start again at 1, and a
    job's media folder is named by its id); ``incoming/`` stays, being watched."""
    yield ingest_bucket
    root = Path(ingest_bucket.root)
    for path in [*root.glob(f"{INCOMING}/*"), *root.glob("*")]:
        if path.name == INCOMING:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def worker_env(bucket: Bucket) -> dict[str, str]:
    return {
        "INGEST_URL": bucket.url,
        "INGEST_THUMBNAIL_SIZES": ",".join(map(str, SIZES)),
        "INGEST_WATCH_SETTLE_SECONDS": "0.5",
        "INGEST_RETRY_BASE_SECONDS": "3",
        "WORKER_LEASE_SECONDS": str(LEASE),
    }


@pytest.fixture(scope="module")
def ingest_worker(app: Any, ingest_bucket: Bucket) -> Iterator[Any]:
    """One worker for the module's later tests: it holds nothing between them. The test
    before the first that asks for it starts workers of its own, and no other."""
    with worker_process(app, "ingest", concurrency=2, env=worker_env(ingest_bucket)) as process:
        yield process


def click(folder: Path, suffix: str = "wav", title: str = "Click") -> Path:
    path = audio.write(folder / f"click.{suffix}", audio.click_track(120, duration=8.0))
    return audio.tag(path, title=title, artist="Metro")


def insert_job(bucket: Bucket, source: Path) -> int:
    """An object put in the bucket and its job inserted by plain SQL, as another service
    would (no ORM, no Celery: the trigger wakes the workers)."""
    key = f"uploads/elsewhere/{source.name}"
    bucket.put_file(source, key)
    (job_id,) = plain_sql("INSERT INTO ingest_jobs (object_path) VALUES (%s) RETURNING id", key)
    return int(job_id)


def job(session: Session, job_id: int) -> IngestJob:
    session.expire_all()
    row = session.get(IngestJob, job_id)
    assert row is not None
    return row


def finished(session: Session, job_id: int) -> IngestJob | None:
    session.expire_all()
    job = session.get(IngestJob, job_id)
    return job if job is not None and job.status in ("done", "failed") else None


def wait_done(session: Session, job_id: int, timeout: float = 60) -> IngestJob:
    job = wait_for(lambda: finished(session, job_id), timeout=timeout, interval=0.2)
    assert (job.status, job.error) == ("done", None)
    return job


def assert_track_with_images(session: Session, bucket: Bucket, job: IngestJob) -> None:
    track = session.get(Track, job.track_id)
    assert track is not None
    assert track.tempo == pytest.approx(120, abs=2)
    images = session.scalars(select(TrackImage).where(TrackImage.track_id == track.id)).all()
    assert {(i.kind, i.size) for i in images} == {
        ("cover", 0),
        ("waveform", 0),
        ("card", 0),
        *(("thumbnail", size) for size in SIZES),
    }
    for image in images:
        with Image.open(io.BytesIO(bucket.read_bytes(image.path))) as opened:
            opened.load()
            assert opened.size == (image.width, image.height)
            if image.kind == "thumbnail":
                assert opened.size == (image.size, image.size)
            if image.kind == "card":
                assert opened.size == (1200, 630)


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


# -- tests that start workers of their own (before the module's worker starts) -------------


def test_a_worker_killed_mid_job_leaves_it_to_another_that_finishes_it_once(
    session: Session, app: Any, bucket: Bucket, tmp_path: Path
) -> None:
    # The job is held at the analysis step's gate (a limit of one, taken by another job)
    # after its probe: a known point mid-job at which to kill its worker.
    with session_scope() as controls:
        control.configure(controls, dt.datetime.now(dt.UTC), concurrency={"analysis": 1})
    (holder,) = plain_sql(
        "INSERT INTO ingest_jobs (object_path, status, step) "
        "VALUES ('uploads/other/holder.wav', 'processing', 'analysis') RETURNING id"
    )
    job_id = insert_job(bucket, click(tmp_path))
    env = worker_env(bucket)

    with worker_process(app, "ingest", env=env) as doomed:
        wait_for(lambda: "probe" in (job(session, job_id).outputs or {}), timeout=60)
        os.killpg(doomed.pid, signal.SIGKILL)  # the whole host is gone: parent and child
        doomed.wait()
    orphan = job(session, job_id)
    assert (orphan.status, orphan.attempts) == ("processing", 1)
    plain_sql("DELETE FROM ingest_jobs WHERE id = %s", holder)

    # Its message comes back (one lease on Redis, at once on RabbitMQ) to the next worker.
    with worker_process(app, "ingest", env=env):
        done = wait_done(session, job_id, timeout=90)

    assert done.attempts == 2
    assert (done.outputs["probe"]["attempt"], done.outputs["analysis"]["attempt"]) == (1, 2)
    assert count(session, Track) == 1
    assert_track_with_images(session, bucket, done)


# -- tests on the module's worker --------------------------------------------------------


def test_a_job_inserted_by_plain_sql_ends_done_within_seconds_with_its_track_and_images(
    session: Session, bucket: Bucket, tmp_path: Path, ingest_worker: Any
) -> None:
    job_id = insert_job(bucket, click(tmp_path))

    done = wait_done(session, job_id)

    assert done.started_at is not None
    assert done.started_at - done.created_at < dt.timedelta(seconds=10)
    assert (done.kind, done.attempts) == ("audio", 1)
    assert_track_with_images(session, bucket, done)


@pytest.mark.broker_independent
@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg", "mp3"])
def test_a_file_dropped_into_incoming_ends_done_within_seconds(
    session: Session, bucket: Bucket, tmp_path: Path, ingest_worker: Any, suffix: str
) -> None:
    if suffix.upper() not in soundfile.available_formats():
        pytest.skip(f"this libsndfile writes no {suffix}")
    source = click(tmp_path, suffix, title=f"Click {suffix}")
    dropped_at = dt.datetime.now(dt.UTC)

    # A plain copy, written in place: the watcher waits until it stops changing.
    target = Path(bucket.path(f"{INCOMING}/album/{source.name}"))
    target.parent.mkdir()
    shutil.copyfile(source, target)
    (job_id,) = wait_for(lambda: session.scalars(select(IngestJob.id)).all(), timeout=20)
    done = wait_done(session, job_id)

    assert done.submitted_via == "watcher"
    assert done.created_at - dropped_at < dt.timedelta(seconds=10)
    assert done.object_path.endswith(f"/{source.name}") and "album" not in done.object_path
    assert not target.exists()
    assert session.get(Track, done.track_id).title == f"Click {suffix}"
    assert_track_with_images(session, bucket, done)


@pytest.mark.broker_independent
def test_a_file_dropped_with_an_image_of_its_name_gets_that_image_as_its_cover(
    session: Session, bucket: Bucket, tmp_path: Path, ingest_worker: Any
) -> None:
    source = click(tmp_path)
    cover = tmp_path / "click.jpg"
    cover.write_bytes(audio.image_bytes("JPEG", (400, 300), (200, 30, 30)))

    # Written under temporary names and renamed, as a careful uploader does.
    for path in (cover, source):
        partial = Path(bucket.path(f"{INCOMING}/.{path.name}.part"))
        shutil.copyfile(path, partial)
        partial.rename(Path(bucket.path(f"{INCOMING}/{path.name}")))
    (job_id,) = wait_for(lambda: session.scalars(select(IngestJob.id)).all(), timeout=20)
    done = wait_done(session, job_id)

    assert done.cover_path is not None and done.cover_path.endswith("/click.jpg")
    assert done.outputs["images"]["cover"]["source"] == "uploaded"
    assert count(session, IngestJob) == 1


@pytest.mark.broker_independent
def test_paused_jobs_stay_queued_and_resume_finishes_them(
    session: Session, bucket: Bucket, tmp_path: Path, ingest_worker: Any
) -> None:
    with session_scope() as controls:
        control.pause(controls, "test", dt.datetime.now(dt.UTC))
    ids = [insert_job(bucket, click(tmp_path, title=f"Click {n}")) for n in range(2)]

    time.sleep(3)  # a running worker's few seconds, in which nothing may start
    session.expire_all()
    waiting = session.scalars(select(IngestJob).order_by(IngestJob.id)).all()
    assert [(j.status, j.attempts, j.started_at) for j in waiting] == [("queued", 0, None)] * 2

    with session_scope() as controls:
        control.resume(controls, dt.datetime.now(dt.UTC))
    for job_id in ids:
        assert wait_done(session, job_id).attempts == 1
    assert count(session, Track) == 2


def test_a_step_failing_on_storage_is_retried_and_resumes_at_that_step(
    session: Session, bucket: Bucket, tmp_path: Path, ingest_worker: Any
) -> None:
    # Held while its fault is laid: a file where the job's media folder goes, so writing
    # its images fails (OSError, the storage's: retried with backoff).
    with session_scope() as controls:
        control.pause(controls, "test", dt.datetime.now(dt.UTC))
    job_id = insert_job(bucket, click(tmp_path))
    blocker = Path(bucket.path(f"media/{job_id}"))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    with session_scope() as controls:
        control.resume(controls, dt.datetime.now(dt.UTC))

    error = wait_for(lambda: failed_once(session, job_id), timeout=60, interval=0.05)
    blocker.unlink()  # well within the retry's delay of 1.5 to 3 s
    done = wait_done(session, job_id)

    assert "StorageUnavailableError" in error
    assert done.attempts == 2
    assert {step: done.outputs[step]["attempt"] for step in ("probe", "analysis", "images")} == {
        "probe": 1,
        "analysis": 1,
        "images": 2,
    }
    assert_track_with_images(session, bucket, done)


def finished_runs(session: Session, expected: int) -> list[TaskRun]:
    session.expire_all()
    query = select(TaskRun).where(TaskRun.task_name == "ingest.process")
    runs = [run for run in session.scalars(query) if run.finished_at is not None]
    return runs if len(runs) >= expected else []


def failed_once(session: Session, job_id: int) -> str | None:
    """The job's error, once its first attempt has failed and it waits for the retry."""
    row = job(session, job_id)
    return row.error if (row.status, row.attempts) == ("queued", 1) else None


@pytest.mark.broker_independent
def test_a_second_message_for_a_job_in_flight_makes_no_second_track(
    session: Session, app: Any, bucket: Bucket, tmp_path: Path, ingest_worker: Any
) -> None:
    job_id = insert_job(bucket, click(tmp_path))
    app.send_task("ingest.process", args=(job_id,))

    done = wait_done(session, job_id)
    runs = wait_for(lambda: finished_runs(session, 2))

    # Whichever message came first ran the job; the other found it taken.
    assert sorted(run.status for run in runs) == ["duplicate", "success"]
    assert done.attempts == 1
    assert (count(session, Track), count(session, TrackImage)) == (1, 3 + len(SIZES))


@pytest.mark.broker_independent
def test_a_message_for_a_done_job_changes_nothing(
    session: Session, app: Any, bucket: Bucket, tmp_path: Path, ingest_worker: Any
) -> None:
    done = wait_done(session, insert_job(bucket, click(tmp_path)))
    made = written(bucket, done.id)
    rows = session.execute(text("SELECT * FROM track_images ORDER BY kind, size")).all()

    again = app.send_task("ingest.process", args=(done.id,))
    (run,) = wait_for(lambda: [r for r in runs_of(session, again.id) if r.finished_at])

    assert run.status == "duplicate"
    assert job(session, done.id).attempts == 1
    assert count(session, Track) == 1
    assert session.execute(text("SELECT * FROM track_images ORDER BY kind, size")).all() == rows
    assert written(bucket, done.id) == made


def written(bucket: Bucket, job_id: int) -> dict[str, int]:
    """The job's media files and when each was last written."""
    folder = Path(bucket.path(f"media/{job_id}"))
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
