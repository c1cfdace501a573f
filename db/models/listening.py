"""Listening statistics: per-user figures, the rollups behind them, the aggregation's state."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Computed,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, CreatedAt


class UserListeningStats(Base):
    """Per-user listening figures, kept by listening.aggregate.

    All-time columns are folded in incrementally; the windowed ones (last 7 / 30 days,
    top artists, genres and tracks) are as of ``window_end``.
    """

    __tablename__ = "user_listening_stats"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    total_plays: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_ms_played: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_minutes: Mapped[Decimal] = mapped_column(
        Numeric(14, 1), Computed("round(total_ms_played / 60000.0, 1)", persisted=True)
    )
    unique_tracks: Mapped[int] = mapped_column(server_default=text("0"))
    unique_artists: Mapped[int] = mapped_column(server_default=text("0"))
    first_played_at: Mapped[dt.datetime | None]
    last_played_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    # Plays by hour of day (UTC), all time: index 0 is 00:00-00:59.
    hourly_plays: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), server_default=text("array_fill(0, ARRAY[24])")
    )
    plays_last_7d: Mapped[int] = mapped_column(server_default=text("0"))
    plays_last_30d: Mapped[int] = mapped_column(server_default=text("0"))
    # [{"artist_id", "name", "plays"}], [{"genre", "plays"}], [{"track_id", "title",
    # "plays"}]: the top ten of the last 30 days, most played first.
    top_artists: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    top_genres: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    top_tracks: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    window_end: Mapped[dt.datetime | None]
    updated_at: Mapped[CreatedAt]

    __table_args__ = (
        Index(
            "ix_user_listening_stats_active",
            "user_id",
            postgresql_where=text("plays_last_30d > 0"),
        ),
    )


class UserTrackPlays(Base):
    """All-time plays of one track by one user: distinct counts and favourites."""

    __tablename__ = "user_track_plays"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    track_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True
    )
    play_count: Mapped[int]
    ms_played: Mapped[int] = mapped_column(BigInteger)
    first_played_at: Mapped[dt.datetime]
    last_played_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_user_track_plays_track_id", "track_id"),)


class UserArtistPlays(Base):
    """All-time plays of one artist by one user."""

    __tablename__ = "user_artist_plays"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    artist_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("artists.id", ondelete="CASCADE"), primary_key=True
    )
    play_count: Mapped[int]
    last_played_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_user_artist_plays_artist_id", "artist_id"),)


class ListeningStatsDirty(Base):
    """Users whose plays were deleted or edited since they were folded in (a trigger on
    play_history adds them); the next aggregation rebuilds them from scratch."""

    __tablename__ = "listening_stats_dirty"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class AggregationWatermark(Base):
    """How far an incremental job has folded play_history, as a transaction id."""

    __tablename__ = "aggregation_watermarks"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_xid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime]
