"""Running ingest jobs without a worker: the Pipeline the ``ingest.process`` task calls,
driven directly against a bucket in a temporary directory. The queue's part (a plain-SQL
row or a dropped file starting work, pause and resume, a killed worker, a duplicate
message) is in tests/system/test_ingest_worker.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select, text

from db.models import Artist, BackgroundTask, IngestJob, Track, TrackImage
from tasks.ingest.dispatch import publish_queued
from tasks.ingest.pipeline import Pipeline, Verdict
from tasks.ingest.storage import Bucket
from tests import audio
from tests.support import take_message
from worker.settings import get_settings

pytestmark = pytest.mark.committed


def settings(bucket: Bucket, **overrides: Any) -> Any:
    values = {"ingest_url": bucket.url, "ingest_thumbnail_sizes": "64,256"}
    return get_settings().model_copy(update=values | overrides)


def run(bucket: Bucket, job_id: int, message: str = "message-1", **overrides: Any) -> Verdict:
    pipeline = Pipeline(
        settings(bucket, **overrides),
        bucket,
        celery_task_id=message,
        hostname="test@host",
        resumable=False,
        sleep=lambda seconds: None,
    )
    return pipeline.run(job_id)


@pytest.fixture
def bucket(tmp_path: Path) -> Bucket:
    return Bucket((tmp_path / "bucket").as_uri())


def put(bucket: Bucket, key: str, source: Path | bytes) -> str:
    data = source if isinstance(source, bytes) else source.read_bytes()
    bucket.write_bytes(key, data)
    return key


def insert_job(
    session: Any,
    object_path: str,
    *,
    cover_path: str | None = None,
    track_id: int | None = None,
    max_attempts: int = 5,
) -> int:
    """A job as another service makes one: a plain INSERT naming the object."""
    job_id = session.scalar(
        text(
            "INSERT INTO ingest_jobs (object_path, cover_path, track_id, max_attempts) "
            "VALUES (:object_path, :cover_path, :track_id, :max_attempts) RETURNING id"
        ),
        {
            "object_path": object_path,
            "cover_path": cover_path,
            "track_id": track_id,
            "max_attempts": max_attempts,
        },
    )
    session.commit()
    return int(job_id)


def job(session: Any, job_id: int) -> IngestJob:
    session.expire_all()
    row = session.get(IngestJob, job_id)
    assert row is not None
    return row


def click_wav(tmp_path: Path, name: str = "click.wav", **tags: str) -> Path:
    path = audio.write(tmp_path / name, audio.click_track(120, duration=20.0))
    return audio.tag(path, **tags) if tags else path


def test_a_job_inserted_by_plain_sql_becomes_a_track_with_its_tempo_and_images(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    key = put(bucket, "uploads/a/click.wav", click_wav(tmp_path, title="Click", artist="Metro"))
    job_id = insert_job(session, key)

    verdict = run(bucket, job_id)

    assert verdict.status == "done", verdict.detail
    done = job(session, job_id)
    assert (done.status, done.kind, done.attempts, done.error) == ("done", "audio", 1, None)
    track = session.get(Track, done.track_id)
    assert track.title == "Click"
    assert track.tempo == pytest.approx(120, abs=2)
    assert track.audio_path == bucket.location(key)
    assert session.get(Artist, track.artist_id).name == "Metro"
    images = {
        (i.kind, i.size): i
        for i in session.scalars(select(TrackImage).where(TrackImage.track_id == track.id))
    }
    assert set(images) == {
        ("cover", 0),
        ("waveform", 0),
        ("card", 0),
        ("thumbnail", 64),
        ("thumbnail", 256),
    }
    for (kind, size), image in images.items():
        with Image.open(io.BytesIO(bucket.read_bytes(image.path))) as opened:
            assert opened.size == (image.width, image.height)
            if kind == "thumbnail":
                assert opened.size == (size, size)
            if kind == "card":
                assert opened.size == (1200, 630)


def test_an_ingested_track_queues_no_ledger_analysis_of_its_own(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    job_id = insert_job(
        session, put(bucket, "uploads/a/click.wav", click_wav(tmp_path, genre="Techno"))
    )

    assert run(bucket, job_id).status == "done"

    track = session.get(Track, job(session, job_id).track_id)
    assert track.genre == "techno"
    assert session.scalar(select(func.count()).select_from(BackgroundTask)) == 0


def test_a_truncated_file_fails_at_once_with_its_reason(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    whole = click_wav(tmp_path).read_bytes()
    job_id = insert_job(session, put(bucket, "uploads/a/cut.wav", whole[: len(whole) // 2]))

    verdict = run(bucket, job_id)

    failed = job(session, job_id)
    assert (verdict.status, failed.status, failed.attempts) == ("failed", "failed", 1)
    assert "truncated" in failed.error
    assert failed.track_id is None


def test_a_text_file_named_wav_fails_as_not_media(session: Any, bucket: Bucket) -> None:
    job_id = insert_job(session, put(bucket, "uploads/a/notes.wav", b"shopping list\n" * 40))

    run(bucket, job_id)

    failed = job(session, job_id)
    assert failed.status == "failed"
    assert "notes.wav" in failed.error and "not" in failed.error


def test_a_job_naming_a_missing_object_fails_saying_so(session: Any, bucket: Bucket) -> None:
    job_id = insert_job(session, "uploads/nowhere/gone.flac")

    run(bucket, job_id)

    failed = job(session, job_id)
    assert failed.status == "failed"
    assert "no object 'uploads/nowhere/gone.flac'" in failed.error


def test_a_storage_failure_retries_and_the_retry_resumes_at_the_failed_step(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    job_id = insert_job(session, put(bucket, "uploads/a/click.wav", click_wav(tmp_path)))
    # A file where the job's media folder goes: the images step cannot write there.
    blocker = Path(bucket.path(f"media/{job_id}"))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")

    first = run(bucket, job_id, message="message-1", ingest_retry_base_seconds=0.01)

    waiting = job(session, job_id)
    assert first.status == "retry" and first.retry_in is not None
    assert (waiting.status, waiting.step, waiting.attempts) == ("queued", "images", 1)
    assert set(waiting.outputs) == {"probe", "analysis"}
    assert "StorageUnavailableError" in waiting.error

    blocker.unlink()
    session.execute(text("UPDATE ingest_jobs SET run_after = now() WHERE id = :id"), {"id": job_id})
    session.commit()
    second = run(bucket, job_id, message="message-1")

    done = job(session, job_id)
    assert second.status == "done", second.detail
    assert (done.status, done.attempts, done.error) == ("done", 2, None)
    # The finished steps kept the first attempt's output; only images and publish ran again.
    assert done.outputs["probe"]["attempt"] == 1
    assert done.outputs["analysis"]["attempt"] == 1
    assert done.outputs["images"]["attempt"] == 2


def test_transient_failures_stop_at_max_attempts_keeping_the_last_error(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    job_id = insert_job(
        session, put(bucket, "uploads/a/click.wav", click_wav(tmp_path)), max_attempts=2
    )
    blocker = Path(bucket.path(f"media/{job_id}"))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")

    assert run(bucket, job_id, ingest_retry_base_seconds=0.01).status == "retry"
    session.execute(text("UPDATE ingest_jobs SET run_after = now() WHERE id = :id"), {"id": job_id})
    session.commit()
    last = run(bucket, job_id)

    failed = job(session, job_id)
    assert last.status == "failed"
    assert (failed.status, failed.attempts) == ("failed", 2)
    assert failed.error.startswith("gave up after 2 attempts: StorageUnavailableError")


def test_running_a_done_job_again_makes_no_second_track_or_images(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    job_id = insert_job(session, put(bucket, "uploads/a/click.wav", click_wav(tmp_path)))
    assert run(bucket, job_id, message="message-1").status == "done"

    again = run(bucket, job_id, message="message-2")

    assert again.status == "not claimed"
    assert session.scalar(select(func.count()).select_from(Track)) == 1
    assert session.scalar(select(func.count()).select_from(TrackImage)) == 5


def test_two_uploads_by_one_artist_spelled_differently_share_the_artist_and_album(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    first = insert_job(
        session,
        put(
            bucket,
            "uploads/a/one.wav",
            click_wav(tmp_path, "one.wav", artist="The  Band", album="Live"),
        ),
    )
    second = insert_job(
        session,
        put(
            bucket,
            "uploads/b/two.wav",
            click_wav(tmp_path, "two.wav", artist="the band", album="LIVE"),
        ),
    )

    run(bucket, first)
    run(bucket, second)

    tracks = session.scalars(select(Track).order_by(Track.id)).all()
    assert len(tracks) == 2
    assert tracks[0].artist_id == tracks[1].artist_id
    assert tracks[0].album_id == tracks[1].album_id is not None
    assert session.scalar(select(func.count()).select_from(Artist)) == 1


def test_an_uploaded_cover_wins_over_the_placeholder(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    key = put(bucket, "uploads/a/click.wav", click_wav(tmp_path))
    cover = put(bucket, "uploads/a/click.jpg", audio.image_bytes("JPEG", (500, 400), (200, 30, 30)))
    job_id = insert_job(session, key, cover_path=cover)

    run(bucket, job_id)

    done = job(session, job_id)
    assert done.outputs["images"]["cover"]["source"] == "uploaded"


def test_an_image_job_replaces_the_cover_of_its_track(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    audio_job = insert_job(session, put(bucket, "uploads/a/click.wav", click_wav(tmp_path)))
    run(bucket, audio_job)
    track_id = job(session, audio_job).track_id
    image_job = insert_job(
        session,
        put(bucket, "uploads/b/new.png", audio.image_bytes("PNG", (300, 300), (10, 200, 10))),
        track_id=track_id,
    )

    verdict = run(bucket, image_job)

    assert verdict.status == "done", verdict.detail
    rows = {(i.kind, i.size): i.job_id for i in session.scalars(select(TrackImage))}
    assert rows[("thumbnail", 64)] == rows[("cover", 0)] == rows[("card", 0)] == image_job
    assert job(session, image_job).outputs["images"]["cover"]["source"] == "uploaded"


def test_an_image_on_its_own_fails_naming_what_it_needs(session: Any, bucket: Bucket) -> None:
    job_id = insert_job(
        session, put(bucket, "uploads/a/lone.png", audio.image_bytes("PNG", (50, 50), (1, 2, 3)))
    )

    run(bucket, job_id)

    failed = job(session, job_id)
    assert failed.status == "failed"
    assert "track_id" in failed.error


def test_paused_the_job_stays_queued_and_its_message_is_dropped(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    job_id = insert_job(session, put(bucket, "uploads/a/click.wav", click_wav(tmp_path)))
    session.execute(
        text("UPDATE ingest_jobs SET enqueued_at = now(), celery_task_id = 'message-1'")
    )
    session.execute(text("INSERT INTO ingest_pipeline (id, paused_at) VALUES (1, now())"))
    session.commit()

    verdict = run(bucket, job_id, message="message-1")

    waiting = job(session, job_id)
    assert verdict.status == "paused"
    assert (waiting.status, waiting.attempts, waiting.enqueued_at) == ("queued", 0, None)


def test_the_dispatcher_publishes_at_most_the_batch_in_flight(
    session: Any, bucket: Bucket, app: Any
) -> None:
    ids = [insert_job(session, f"uploads/{n}/x.wav") for n in range(5)]

    published = publish_queued(lambda: _scope(session), app, settings(bucket, ingest_batch_size=3))
    again = publish_queued(lambda: _scope(session), app, settings(bucket, ingest_batch_size=3))

    assert (published, again) == (3, 0)
    sent = []
    while (message := take_message(app, "ingest")) is not None:
        sent.append(message[1][0][0])
    assert sent == ids[:3]


def test_the_dispatcher_publishes_nothing_while_paused(
    session: Any, bucket: Bucket, app: Any
) -> None:
    insert_job(session, "uploads/1/x.wav")
    session.execute(text("INSERT INTO ingest_pipeline (id, paused_at) VALUES (1, now())"))
    session.commit()

    assert publish_queued(lambda: _scope(session), app, settings(bucket)) == 0


def _scope(session: Any) -> Any:
    from db.session import session_scope

    return session_scope()


def test_a_step_at_its_concurrency_limit_sends_the_job_back_without_spending_an_attempt(
    session: Any, bucket: Bucket, tmp_path: Path
) -> None:
    job_id = insert_job(session, put(bucket, "uploads/a/click.wav", click_wav(tmp_path)))
    busy = insert_job(session, "uploads/b/other.wav")
    session.execute(
        text("UPDATE ingest_jobs SET status = 'processing', step = 'probe' WHERE id = :id"),
        {"id": busy},
    )
    session.execute(
        text("INSERT INTO ingest_pipeline (id, step_concurrency) VALUES (1, :limits)"),
        {"limits": json.dumps({"probe": 1})},
    )
    session.commit()

    pipeline = Pipeline(
        settings(bucket),
        bucket,
        celery_task_id="message-1",
        hostname="test@host",
        resumable=False,
        sleep=lambda seconds: None,
        step_wait_seconds=0.0,
    )
    verdict = pipeline.run(job_id)

    waiting = job(session, job_id)
    assert verdict.status == "busy" and verdict.retry_in
    assert (waiting.status, waiting.attempts) == ("queued", 0)
    assert "concurrency limit (1)" in waiting.error
