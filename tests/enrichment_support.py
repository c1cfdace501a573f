"""Builders for the enrichment tests: songs in the Spotify stand-in, listens, connections."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import insert
from sqlalchemy.orm import Session

from db.models import Listen, UploadJob, User
from standins.spotify import SpotifyStandIn, StandInAlbum, StandInArtist, StandInTrack
from tasks.enrichment.accounts import connect
from worker.secrets import SecretCipher
from worker.settings import Settings, get_settings

TOKEN_KEY = "hZ3Yq0b2m0v7b6N1yT6m9pQm3x0Vw1s5kq3r8c2dJfE="
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret"
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Song:
    artist: str
    title: str
    track_id: str
    artist_id: str


def _spotify_id(text: str) -> str:
    # The stand-in (like spotipy) wants alphanumeric ids.
    return re.sub(r"[^0-9a-zA-Z]", "", text)


def add_song(
    standin: SpotifyStandIn,
    artist: str,
    title: str,
    *,
    genres: Iterable[str] = ("indie pop",),
    release_date: str = "2019-05-17",
    isrc: str | None = None,
) -> Song:
    artist_id = _spotify_id("ar" + artist)
    album_id = _spotify_id("al" + artist + title)
    track_id = _spotify_id("tr" + artist + title)
    standin.add_artist(StandInArtist(artist_id, artist, genres=tuple(genres)))
    standin.add_album(StandInAlbum(album_id, f"{title} (Single)", (artist_id,), release_date))
    standin.add_track(
        StandInTrack(track_id, title, (artist_id,), album_id, duration_ms=201_000, isrc=isrc)
    )
    return Song(artist, title, track_id, artist_id)


def spotify_settings(standin: SpotifyStandIn, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "spotify_client_id": CLIENT_ID,
        "spotify_client_secret": SecretStr(CLIENT_SECRET),
        "spotify_api_url": standin.api_url,
        "spotify_token_url": standin.token_url,
        "token_encryption_key": SecretStr(TOKEN_KEY),
        "spotify_requests_per_minute": 60_000,
    }
    values.update(overrides)
    return get_settings().model_copy(update=values)


def cipher() -> SecretCipher:
    return SecretCipher(TOKEN_KEY)


def new_user(session: Session) -> int:
    row = User()
    session.add(row)
    session.flush()
    return row.id


def connected_user(
    session: Session,
    standin: SpotifyStandIn,
    refresh_token: str,
    *,
    access_token: str | None = None,
    expires_in: int | None = None,
    now: dt.datetime = NOW,
) -> int:
    user_id = new_user(session)
    standin.add_refresh_token(refresh_token)
    connect(
        session,
        cipher(),
        user_id,
        refresh_token,
        now,
        access_token=access_token,
        expires_in=expires_in,
    )
    return user_id


def upload(session: Session, user_id: int, status: str = "completed") -> int:
    row = UploadJob(user_id=user_id, status=status)
    session.add(row)
    session.flush()
    return row.id


def add_listens(
    session: Session,
    user_id: int,
    names: Iterable[tuple[str, str]],
    *,
    upload_id: int | None = None,
    spotify_track_id: str | None = None,
) -> None:
    rows = [
        {
            "user_id": user_id,
            "upload_id": upload_id,
            "played_at": NOW - dt.timedelta(days=1, minutes=i),
            "artist_name": artist,
            "track_name": title,
            "spotify_track_id": spotify_track_id,
        }
        for i, (artist, title) in enumerate(names)
    ]
    if rows:
        session.execute(insert(Listen), rows)


def busiest_window(times: list[float], length: float) -> int:
    """The most requests that arrived within any half-open interval of ``length`` seconds."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= length:
            start += 1
        most = max(most, end - start + 1)
    return most
