"""Imported listening data (uploads of a user's history) and Spotify connections."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

UPLOAD_STATUSES = ("pending", "processing", "completed", "failed")


class UploadJob(Base):
    __tablename__ = "upload_jobs"

    id: Mapped[BigId]
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    created_at: Mapped[CreatedAt]
    completed_at: Mapped[dt.datetime | None]

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed')", name="status"
        ),
    )


class Listen(Base):
    __tablename__ = "listens"

    id: Mapped[BigId]
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    upload_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("upload_jobs.id", ondelete="SET NULL"), index=True
    )
    played_at: Mapped[dt.datetime]
    artist_name: Mapped[str] = mapped_column(Text)
    track_name: Mapped[str] = mapped_column(Text)
    album_name: Mapped[str | None] = mapped_column(Text)
    ms_played: Mapped[int | None]
    spotify_track_id: Mapped[str | None] = mapped_column(Text)
    enriched_at: Mapped[dt.datetime | None]

    __table_args__ = (
        # The enrichment backlog: small, and the only rows that job scans.
        Index("ix_listens_unenriched", "id", postgresql_where=text("enriched_at IS NULL")),
    )


class SpotifyToken(Base):
    """A user's Spotify connection. Tokens are stored encrypted (issue 6 defines how)."""

    __tablename__ = "spotify_tokens"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    refresh_token_encrypted: Mapped[str] = mapped_column(Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_token_expires_at: Mapped[dt.datetime | None]
    scope: Mapped[str | None] = mapped_column(Text)
    authorized_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]
    revoked_at: Mapped[dt.datetime | None]
