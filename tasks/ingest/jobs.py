"""Jobs in: files copied into the bucket and their ``ingest_jobs`` rows, for the CLI, the
API and the watcher alike.

An audio file and an image of the same name (``song.flac`` and ``song.jpg``) sent together
are one job, the image its cover; ``--cover`` names one explicitly. An image sent with
``track_id`` is a new cover for that track. The rows are inserted in the caller's
transaction; the trigger on ``ingest_jobs`` wakes the ingest workers at its commit.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from db.models import IngestJob, Track, User
from tasks.ingest.storage import Bucket, upload_key
from worker.errors import PermanentError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


class SubmissionError(PermanentError):
    """A submission that cannot become a job (no such user or track, nothing to send)."""


@dataclass(frozen=True)
class Upload:
    """One job's files: the media, and an uploaded cover for it if one came along."""

    media: str  # a name or path; its last part becomes the object's name
    cover: str | None = None


def guess_kind(name: str) -> str | None:
    """The kind a name suggests (the probe decides from the content)."""
    suffix = posixpath.splitext(name.lower())[1]
    return "audio" if suffix in AUDIO_SUFFIXES else "image" if suffix in IMAGE_SUFFIXES else None


def pair(names: Sequence[str]) -> list[Upload]:
    """The jobs a set of names makes: each audio-or-other file one job, an image with the
    same stem as one of them its cover, any other image a job of its own."""
    by_stem: dict[str, str] = {}
    for name in names:
        if guess_kind(name) != "image":
            by_stem.setdefault(_stem(name), name)
    covers: dict[str, str] = {}
    lone_images = []
    for name in names:
        if guess_kind(name) == "image":
            media = by_stem.get(_stem(name))
            if media is not None and media not in covers:
                covers[media] = name
            else:
                lone_images.append(name)
    return [
        *(Upload(name, covers.get(name)) for name in names if guess_kind(name) != "image"),
        *(Upload(name) for name in lone_images),
    ]


def _stem(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name.replace("\\", "/")))[0].lower()


def check_owner(session: Session, user_id: int | None, track_id: int | None) -> None:
    if user_id is not None and session.get(User, user_id) is None:
        raise SubmissionError(f"there is no user {user_id}")
    if (
        track_id is not None
        and session.scalar(select(Track.id).where(Track.id == track_id)) is None
    ):
        raise SubmissionError(f"there is no track {track_id}")


def create_job(
    session: Session,
    object_path: str,
    *,
    cover_path: str | None = None,
    user_id: int | None = None,
    track_id: int | None = None,
    via: str,
    max_attempts: int,
) -> int:
    """One job for an object already in the bucket; its id."""
    return int(
        session.execute(
            insert(IngestJob)
            .values(
                object_path=object_path,
                cover_path=cover_path,
                kind=guess_kind(object_path),
                user_id=user_id,
                track_id=track_id,
                submitted_via=via,
                max_attempts=max_attempts,
            )
            .returning(IngestJob.id)
        ).scalar_one()
    )


def submit_files(
    session: Session,
    bucket: Bucket,
    files: Sequence[Path],
    *,
    today: dt.date,
    user_id: int | None = None,
    track_id: int | None = None,
    cover: Path | None = None,
    via: str,
    max_attempts: int,
) -> list[int]:
    """Copy local files into the bucket, one folder per job, and create their jobs (in the
    caller's transaction); the jobs' ids, in the order of ``files``' jobs.

    Nothing is checked here but the files' presence: what a file holds is the probe's to
    find, recorded on the job where an operator sees it.
    """
    check_owner(session, user_id, track_id)
    missing = [str(f) for f in [*files, *([cover] if cover else [])] if not Path(f).is_file()]
    if missing:
        raise SubmissionError(f"no such file: {', '.join(missing)}")
    uploads = pair([str(f) for f in files])
    if cover is not None:
        if len(uploads) != 1:
            raise SubmissionError("--cover goes with exactly one audio file")
        uploads = [Upload(uploads[0].media, str(cover))]
    ids = []
    for upload in uploads:
        token = uuid.uuid4().hex
        folder = today.isoformat().replace("-", "/")
        media_key = upload_key(Path(upload.media).name, folder, token)
        bucket.put_file(Path(upload.media), media_key)
        cover_key = None
        if upload.cover is not None:
            cover_key = upload_key(Path(upload.cover).name, folder, token)
            bucket.put_file(Path(upload.cover), cover_key)
        ids.append(
            create_job(
                session,
                media_key,
                cover_path=cover_key,
                user_id=user_id,
                track_id=track_id,
                via=via,
                max_attempts=max_attempts,
            )
        )
    return ids
