"""The catalogue and its listening history. Other services write these tables directly."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt


class User(Base):
    __tablename__ = "users"

    id: Mapped[BigId]
    created_at: Mapped[CreatedAt] = mapped_column(index=True)


class Artist(Base):
    __tablename__ = "artists"

    id: Mapped[BigId]
    name: Mapped[str] = mapped_column(Text)
    genres: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))


class Album(Base):
    __tablename__ = "albums"

    id: Mapped[BigId]
    artist_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("artists.id", ondelete="CASCADE"), index=True
    )
    title: Mapped[str] = mapped_column(Text)
    release_date: Mapped[dt.date | None]


class Track(Base):
    __tablename__ = "tracks"

    id: Mapped[BigId]
    title: Mapped[str] = mapped_column(Text)
    artist_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("artists.id", ondelete="CASCADE"), index=True
    )
    album_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("albums.id", ondelete="SET NULL"), index=True
    )
    genre: Mapped[str | None] = mapped_column(Text, index=True)
    duration_ms: Mapped[int | None]
    popularity: Mapped[int | None] = mapped_column(SmallInteger)  # 0..100
    release_date: Mapped[dt.date | None] = mapped_column(index=True)
    audio_path: Mapped[str | None] = mapped_column(Text)
    mood: Mapped[str | None] = mapped_column(Text)
    energy_level: Mapped[float | None]
    tempo: Mapped[float | None]
    # What the audio analyses measured (``tasks.analysis.audio_features``), mood's inputs included.
    audio_features: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Where ``genre`` came from when it was inferred (``tasks.analysis.genre``); NULL: as supplied.
    genre_source: Mapped[str | None] = mapped_column(Text)
    genre_confidence: Mapped[float | None]
    created_at: Mapped[CreatedAt]

    __table_args__ = (
        # A genre's most popular tracks and its new releases (playlist pools); an
        # artist's new releases.
        Index("ix_tracks_genre_popularity", "genre", text("popularity DESC NULLS LAST")),
        Index("ix_tracks_artist_id_release_date", "artist_id", "release_date"),
        Index("ix_tracks_genre_release_date", "genre", "release_date"),
    )


class PlayHistory(Base):
    __tablename__ = "play_history"

    id: Mapped[BigId]
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    track_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tracks.id", ondelete="CASCADE"))
    played_at: Mapped[dt.datetime]
    ms_played: Mapped[int | None]
    # The inserting transaction: the order plays were committed in, which is what
    # incremental aggregation follows (tasks/listening/). Filled by the database.
    ingest_xid: Mapped[int] = mapped_column(
        BigInteger, server_default=text("(pg_current_xact_id())::text::bigint")
    )

    __table_args__ = (
        # A user's history in time order: per-user stats and playlists.
        Index("ix_play_history_user_id_played_at", "user_id", "played_at"),
        # Time windows over all users: trending.
        Index("ix_play_history_played_at", "played_at"),
        # Deleting a track cascades here; without this the cascade scans the table.
        Index("ix_play_history_track_id", "track_id"),
        Index(
            "ix_play_history_ingest_xid",
            "ingest_xid",
            postgresql_using="brin",
            postgresql_with={"pages_per_range": 32},
        ),
    )
