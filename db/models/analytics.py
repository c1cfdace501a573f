"""What the periodic jobs compute: per-user stats, trending tracks, smart playlists."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

PLAYLIST_TYPES = ("daily_mix", "discovery_weekly", "new_for_you", "forgotten_favorites")


class UserListeningStats(Base):
    __tablename__ = "user_listening_stats"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    total_plays: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total_ms_played: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    unique_tracks: Mapped[int] = mapped_column(server_default=text("0"))
    unique_artists: Mapped[int] = mapped_column(server_default=text("0"))
    first_played_at: Mapped[dt.datetime | None]
    last_played_at: Mapped[dt.datetime | None]
    updated_at: Mapped[CreatedAt]


class TrendingTrack(Base):
    __tablename__ = "trending_tracks"

    track_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tracks.id", ondelete="CASCADE"), primary_key=True
    )
    trend_score: Mapped[float]
    play_count_24h: Mapped[int]
    play_count_7d: Mapped[int]
    unique_listeners_24h: Mapped[int]
    unique_listeners_7d: Mapped[int]
    calculated_at: Mapped[dt.datetime]


class SmartPlaylist(Base):
    __tablename__ = "smart_playlists"

    id: Mapped[BigId]
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    playlist_type: Mapped[str] = mapped_column(Text)
    track_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))  # in play order
    generated_at: Mapped[CreatedAt]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)

    __table_args__ = (
        # One live playlist per user and type: a new one replaces the old (upsert).
        UniqueConstraint("user_id", "playlist_type"),
        CheckConstraint(
            "playlist_type IN ('daily_mix', 'discovery_weekly', 'new_for_you',"
            " 'forgotten_favorites')",
            name="playlist_type",
        ),
        Index("ix_smart_playlists_playlist_type", "playlist_type"),
    )
