"""Trending tracks: the ranked table ``trending.calculate`` replaces."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
)
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base


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
    rank: Mapped[int]  # 1 = hottest

    __table_args__ = (Index("ix_trending_tracks_rank", "rank", unique=True),)
