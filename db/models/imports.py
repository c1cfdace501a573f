"""Imported listening data (uploads of a user's history) and Spotify connections."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, BigId, CreatedAt

UPLOAD_STATUSES = ("pending", "processing", "completed", "failed")
ENRICHMENT_STATUSES = ("pending", "matched", "not_found", "failed")


class UploadJob(Base):
    __tablename__ = "upload_jobs"

    id: Mapped[BigId]
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    created_at: Mapped[CreatedAt]
    completed_at: Mapped[dt.datetime | None]
    # When its enrichment.enrich_upload was published; NULL on a completed upload means
    # the dispatcher still owes it one (the trigger in
    # db/triggers/upload_jobs_notify_completed.sql wakes the dispatcher).
    enrichment_queued_at: Mapped[dt.datetime | None]

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed')", name="status"
        ),
        Index(
            "ix_upload_jobs_enrichment_unqueued",
            "id",
            postgresql_where=text("status = 'completed' AND enrichment_queued_at IS NULL"),
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
    # An export may already carry the track's Spotify id; then no search is needed.
    spotify_track_id: Mapped[str | None] = mapped_column(Text)

    # Enrichment (``tasks.enrichment``): the cache entry this listen resolves through,
    # and what it said.
    match_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("spotify_matches.id", ondelete="SET NULL"), index=True
    )
    spotify_artist_ids: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    spotify_album_id: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None]
    popularity: Mapped[int | None] = mapped_column(SmallInteger)
    isrc: Mapped[str | None] = mapped_column(Text)
    release_date: Mapped[dt.date | None]
    enrichment_status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    enrichment_attempts: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    enrichment_error: Mapped[str | None] = mapped_column(Text)
    enriched_at: Mapped[dt.datetime | None] = mapped_column(index=True)

    __table_args__ = (
        CheckConstraint(
            "enrichment_status IN ('pending', 'matched', 'not_found', 'failed')",
            name="enrichment_status",
        ),
        # The backlog (what progress and the stall alert count): small once caught up.
        Index(
            "ix_listens_enrichment_pending",
            "user_id",
            postgresql_where=text("enrichment_status = 'pending'"),
        ),
        # Listens not yet tied to a cache entry, per user: what each run registers first.
        Index(
            "ix_listens_unregistered",
            "user_id",
            "id",
            postgresql_where=text("enrichment_status = 'pending' AND match_id IS NULL"),
        ),
    )


class SpotifyToken(Base):
    """A user's Spotify connection; tokens are Fernet-encrypted (``tasks.enrichment.accounts``).

    Revoking (the user disconnects, or Spotify answers invalid_grant) wipes both tokens
    and keeps the row, so status can say who was revoked, when and why.
    """

    __tablename__ = "spotify_tokens"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    access_token_expires_at: Mapped[dt.datetime | None]
    scope: Mapped[str | None] = mapped_column(Text)
    authorized_at: Mapped[CreatedAt]
    updated_at: Mapped[CreatedAt]
    revoked_at: Mapped[dt.datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(Text)
