"""The ingest watcher taking files from a local bucket's ``incoming/`` into jobs, against
real PostgreSQL: the rename that claims a file, the transaction around it, and the
watcher's pass driven with its clock in hand. The decisions before it (settling, names,
pairing) are in tests/unit/test_ingest_watcher.py; the thread in a real worker in
tests/system/test_ingest_worker.py."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from db.models import IngestJob
from db.session import get_engine, make_engine, session_scope
from tasks.ingest.storage import Bucket
from tasks.ingest.watcher import Watcher, take
from tests.support import wait_for

# Files and rows only: the broker is never touched.
pytestmark = [pytest.mark.committed, pytest.mark.broker_independent]

TODAY = dt.date(2026, 11, 25)


@pytest.fixture
def bucket(tmp_path: Path) -> Bucket:
    return Bucket((tmp_path / "bucket").as_uri())


def drop(bucket: Bucket, name: str, data: bytes = b"RIFF....WAVE") -> Path:
    path = Path(bucket.path(f"incoming/{name}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def jobs(session: Session) -> list[IngestJob]:
    session.expire_all()
    return list(session.scalars(select(IngestJob).order_by(IngestJob.id)))


def incoming(bucket: Bucket) -> list[str]:
    root = Path(bucket.path("incoming"))
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_a_taken_file_becomes_a_queued_job_under_a_fresh_upload_key(
    session: Session, bucket: Bucket
) -> None:
    drop(bucket, "song.wav", b"the song")

    taken = take(session, bucket, ["song.wav"], TODAY, max_attempts=3)

    (job,) = jobs(session)
    assert taken.jobs == [job.id]
    assert (job.status, job.kind, job.submitted_via, job.max_attempts) == (
        "queued",
        "audio",
        "watcher",
        3,
    )
    assert job.object_path.startswith("uploads/2026/11/25/")
    assert job.object_path.endswith("/song.wav")
    assert bucket.read_bytes(job.object_path) == b"the song"
    assert incoming(bucket) == []


def test_a_file_in_a_subfolder_is_keyed_by_its_name_alone(session: Session, bucket: Bucket) -> None:
    drop(bucket, "label/album/song.flac")

    take(session, bucket, ["label/album/song.flac"], TODAY, max_attempts=3)

    (job,) = jobs(session)
    _, date_y, date_m, date_d, token, name = job.object_path.split("/")
    assert (date_y, date_m, date_d, name) == ("2026", "11", "25", "song.flac")
    assert len(token) == 32


def test_an_audio_file_and_its_same_named_image_become_one_job_with_its_cover(
    session: Session, bucket: Bucket
) -> None:
    drop(bucket, "song.flac")
    drop(bucket, "song.jpg", b"a cover")

    take(session, bucket, ["song.flac", "song.jpg"], TODAY, max_attempts=3)

    (job,) = jobs(session)
    assert job.cover_path is not None
    assert job.cover_path.rsplit("/", 1)[0] == job.object_path.rsplit("/", 1)[0]
    assert bucket.read_bytes(job.cover_path) == b"a cover"


def test_a_second_taker_of_a_file_already_taken_makes_no_job_and_leaves_no_folder(
    session: Session, bucket: Bucket
) -> None:
    drop(bucket, "song.wav")
    first = take(session, bucket, ["song.wav"], TODAY, max_attempts=3)

    # Another watcher that saw the same file settle before the first one moved it.
    with session_scope() as other:
        second = take(other, bucket, ["song.wav"], TODAY, max_attempts=3)

    assert (len(first.jobs), second.jobs, second.gone) == (1, [], ["song.wav"])
    assert len(jobs(session)) == 1
    tokens = list(Path(bucket.path("uploads/2026/11/25")).iterdir())
    assert len(tokens) == 1


def test_watchers_racing_over_the_same_files_make_one_job_per_file(
    session: Session, bucket: Bucket
) -> None:
    names = [f"song-{n:02}.wav" for n in range(20)]
    for name in names:
        drop(bucket, name, name.encode())
    start = threading.Barrier(3)
    made: list[list[int]] = []

    def watcher() -> None:
        start.wait()
        with session_scope() as own:
            made.append(take(own, bucket, names, TODAY, max_attempts=3).jobs)

    racers = [threading.Thread(target=watcher) for _ in range(3)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)

    rows = jobs(session)
    assert sorted(job_id for ids in made for job_id in ids) == [job.id for job in rows]
    assert sorted(bucket.read_bytes(job.object_path).decode() for job in rows) == names
    assert incoming(bucket) == []


@contextmanager
def commits_refused() -> Iterator[None]:
    """PostgreSQL refuses every commit that inserted an ingest job: a deferred constraint
    trigger raises at COMMIT, after the rename, as a commit lost to the database would."""
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'commit refused by the test'; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON ingest_jobs "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()"
            )
        )
    try:
        yield
    finally:
        with get_engine().begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_commit ON ingest_jobs"))
            conn.execute(text("DROP FUNCTION refuse_commit()"))


def test_a_refused_commit_puts_the_files_back_in_incoming(session: Session, bucket: Bucket) -> None:
    drop(bucket, "album/song.flac", b"the song")
    drop(bucket, "album/song.png", b"its cover")

    with commits_refused(), pytest.raises(Exception, match="commit refused by the test"):
        take(session, bucket, ["album/song.flac", "album/song.png"], TODAY, max_attempts=3)

    assert jobs(session) == []
    assert incoming(bucket) == ["album/song.flac", "album/song.png"]
    assert Path(bucket.path("incoming/album/song.flac")).read_bytes() == b"the song"
    assert list(Path(bucket.path("uploads/2026/11/25")).iterdir()) == []


def test_a_file_that_cannot_be_moved_is_left_where_it_is_and_the_others_are_taken(
    session: Session, bucket: Bucket
) -> None:
    drop(bucket, "a.wav")
    drop(bucket, "b.wav")
    # A plain file where today's upload folders go: no file can be moved under it.
    Path(bucket.path("uploads/2026")).parent.mkdir(parents=True)
    Path(bucket.path("uploads/2026")).write_text("in the way")

    taken = take(session, bucket, ["a.wav", "b.wav"], TODAY, max_attempts=3)
    later = take(session, bucket, ["a.wav"], TODAY + dt.timedelta(days=400), max_attempts=3)

    assert (taken.jobs, taken.refused) == ([], ["a.wav", "b.wav"])
    assert incoming(bucket) == ["b.wav"]
    assert len(later.jobs) == 1 and later.jobs == [job.id for job in jobs(session)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_watchers_pass_takes_a_dropped_file_once_it_has_settled(
    session: Session, bucket: Bucket
) -> None:
    clock = Clock()
    watcher = Watcher(bucket, 1.0, max_attempts=3, clock=clock, today=lambda: TODAY)
    Path(bucket.path("incoming")).mkdir(parents=True)
    drop(bucket, "song.wav")

    first = watcher.step(changed=True)
    clock.now += 0.5
    halfway = watcher.step(changed=False)
    clock.now += 0.5
    settled = watcher.step(changed=False)

    assert (first, halfway) == ([], [])
    assert settled == [job.id for job in jobs(session)] and len(settled) == 1


def test_a_file_that_could_not_be_moved_is_tried_again_at_the_next_full_scan_not_every_tick(
    session: Session, bucket: Bucket
) -> None:
    clock = Clock()
    watcher = Watcher(
        bucket, 0.0, max_attempts=3, clock=clock, today=lambda: TODAY, rescan_seconds=30.0
    )
    drop(bucket, "song.wav")
    blocker = Path(bucket.path("uploads"))
    blocker.write_text("in the way")  # a plain file where the upload folders go

    assert watcher.step(changed=True) == []
    blocker.unlink()
    clock.now += 1
    assert watcher.step(changed=False) == []
    clock.now += 30

    assert len(watcher.step(changed=False)) == 1
    assert incoming(bucket) == []


def test_the_watchers_pass_survives_a_database_outage_and_takes_the_file_after_it(
    session: Session, bucket: Bucket
) -> None:
    unreachable = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")

    @contextmanager
    def outage() -> Iterator[Session]:
        with Session(unreachable) as down:
            yield down

    clock = Clock()
    watcher = Watcher(
        bucket, 0.0, max_attempts=3, clock=clock, today=lambda: TODAY, session_factory=outage
    )
    Path(bucket.path("incoming")).mkdir(parents=True)
    drop(bucket, "song.wav")

    with pytest.raises(OperationalError):
        watcher.step(changed=True)
    assert incoming(bucket) == ["song.wav"]

    watcher.session_factory = session_scope
    clock.now += 1
    assert len(watcher.step(changed=False)) == 1
    assert incoming(bucket) == []


def test_the_watcher_thread_makes_a_job_of_a_dropped_file_within_seconds_and_stops(
    session: Session, bucket: Bucket
) -> None:
    watcher = Watcher(bucket, 0.3, max_attempts=3)
    watcher.start()
    try:
        wait_for(lambda: Path(bucket.path("incoming")).is_dir())
        drop(bucket, "song.wav")
        (job,) = wait_for(lambda: jobs(session), timeout=10)
    finally:
        began = time.monotonic()
        watcher.stop()
        watcher.join(timeout=10)

    assert not watcher.is_alive()
    assert time.monotonic() - began < 2
    assert job.submitted_via == "watcher"
    assert session.scalar(select(func.count()).select_from(IngestJob)) == 1
