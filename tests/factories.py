"""Tiny builders for hand-made fixtures: each test shows the data its answer follows from."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from db.models import Artist, PlayHistory, Track, User

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
