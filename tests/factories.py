"""Tiny builders for hand-made fixtures: each test shows the data its answer follows from."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from db.models import (
    Artist,
    JobStatusChange,
    PlayHistory,
    Track,
    UploadJob,
    User,
    WorkflowExecution,
)

MINUTE = 60_000


def artist(session: Session, name: str = "Artist", genres: Iterable[str] = ("rock",)) -> Artist:
    row = Artist(name=name, genres=list(genres))
    session.add(row)
    session.flush()
    return row


def track(session: Session, by: Artist, title: str = "Track", **fields: Any) -> Track:
    fields.setdefault("genre", by.genres[0] if by.genres else None)
    fields.setdefault("duration_ms", 3 * MINUTE)
    row = Track(title=title, artist_id=by.id, **fields)
    session.add(row)
    session.flush()
    return row


def user(session: Session) -> User:
    row = User()
    session.add(row)
    session.flush()
    return row


def plays(
    session: Session, who: User, what: Track, *when: dt.datetime, ms_played: int = 3 * MINUTE
) -> None:
    session.add_all(
        PlayHistory(user_id=who.id, track_id=what.id, played_at=at, ms_played=ms_played)
        for at in when
    )
    session.flush()


def upload(session: Session, user_id: int, status: str = "completed") -> UploadJob:
    row = UploadJob(user_id=user_id, status=status)
    session.add(row)
    session.flush()
    return row


_change_ids = itertools.count(1)


def execution(
    session: Session,
    workflow_id: int,
    status: str,
    created_at: dt.datetime,
    *,
    job_id: int = 1,
    new_status: str = "completed",
    **fields: Any,
) -> WorkflowExecution:
    """A workflow's execution as the dispatcher would have logged it (each its own change)."""
    change_id = next(_change_ids)
    row = WorkflowExecution(
        workflow_id=workflow_id,
        change_id=change_id,
        source="upload_jobs",
        job_id=job_id,
        old_status="processing",
        new_status=new_status,
        trigger_data={},
        status=status,
        idempotency_key=f"key-{change_id}",
        chain=[workflow_id],
        max_attempts=5,
        created_at=created_at,
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def status_change(
    session: Session, job_id: int, new_status: str, changed_at: dt.datetime, **fields: Any
) -> JobStatusChange:
    """A change as the status trigger records it, not yet matched unless ``matched_at``."""
    row = JobStatusChange(
        source="upload_jobs",
        job_id=job_id,
        old_status="processing",
        new_status=new_status,
        job={"id": job_id, "status": new_status},
        changed_at=changed_at,
        **fields,
    )
    session.add(row)
    session.flush()
    return row
