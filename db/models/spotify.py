"""What Spotify told us, cached for every user: search answers, tracks and artists.

``spotify_matches`` is the cache the enrichment consults before it spends a request: one
row per distinct normalized (artist, track) key (``tasks.enrichment.matching``), or per
Spotify track id an export already carried. Listens point at their row, so one answer
serves them all.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt


class SpotifyMatch(Base):
    __tablename__ = "spotify_matches"

    id: Mapped[BigId]
    # "s:<artist>\x1f<track>" for a search key, "id:<spotify track id>" for a known id.
    key: Mapped[str] = mapped_column(Text, unique=True)
    # The search's q= string; NULL for a known id (fetched from /tracks instead).
    query: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    spotify_track_id: Mapped[str | None] = mapped_column(Text)
    score: Mapped[float | None]
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[dt.datetime | None]
    # A not_found or failed key may be asked again from then on; NULL: never again.
    retry_at: Mapped[dt.datetime | None]
    # A run that took the key to ask Spotify holds it until then (a dead run's lapses).
    claimed_until: Mapped[dt.datetime | None]
    created_at: Mapped[CreatedAt]

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'matched', 'not_found', 'failed')", name="status"),
        # Keys still to ask about: pending ones, and answers that may be retried.
        Index(
            "ix_spotify_matches_unresolved",
            "status",
            "retry_at",
            postgresql_where=text("status <> 'matched'"),
        ),
    )


class SpotifyTrack(Base):
    __tablename__ = "spotify_tracks"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    artist_ids: Mapped[list[str]] = mapped_column(ARRAY(Text))
    album_id: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None]
    # Spotify stopped sending popularity to development-mode apps in 2026: optional.
    popularity: Mapped[int | None] = mapped_column(SmallInteger)
    isrc: Mapped[str | None] = mapped_column(Text)
    release_date: Mapped[dt.date | None]
    release_date_precision: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[dt.datetime]


class SpotifyArtist(Base):
    __tablename__ = "spotify_artists"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    # NULL until the artist itself was fetched (a track names it before that).
    genres: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    popularity: Mapped[int | None] = mapped_column(SmallInteger)
    fetched_at: Mapped[dt.datetime | None]
    claimed_until: Mapped[dt.datetime | None]

    __table_args__ = (
        # Artists still to fetch (their genres feed genre classification).
        Index("ix_spotify_artists_unfetched", "id", postgresql_where=text("fetched_at IS NULL")),
    )
