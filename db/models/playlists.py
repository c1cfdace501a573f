"""Smart playlists: four kinds per user, each generated for a period and expiring."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

PLAYLIST_TYPES = ("daily_mix", "discovery_weekly", "new_for_you", "forgotten_favorites")


class SmartPlaylist(Base):
    __tablename__ = "smart_playlists"

    id: Mapped[BigId]
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    playlist_type: Mapped[str] = mapped_column(Text)
    track_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))  # in play order
    generated_at: Mapped[CreatedAt]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    # No listening history: drawn from trending and popular tracks instead.
    cold_start: Mapped[bool] = mapped_column(server_default=false())
    # The day (daily types) or Monday (weekly types) whose seed drew this playlist.
    period_start: Mapped[dt.date] = mapped_column(server_default=text("CURRENT_DATE"))

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
