"""Spotify enrichment: the shared answer cache, listens' enrichment columns, upload trigger.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.triggers import sql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spotify_artists",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("genres", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("popularity", sa.SmallInteger(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spotify_artists")),
    )
    op.create_index(
        "ix_spotify_artists_unfetched",
        "spotify_artists",
        ["id"],
        unique=False,
        postgresql_where=sa.text("fetched_at IS NULL"),
    )
    op.create_table(
        "spotify_matches",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("spotify_track_id", sa.Text(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("attempts", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'matched', 'not_found', 'failed')",
            name=op.f("ck_spotify_matches_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spotify_matches")),
        sa.UniqueConstraint("key", name=op.f("uq_spotify_matches_key")),
    )
    op.create_index(
        "ix_spotify_matches_unresolved",
        "spotify_matches",
        ["status", "retry_at"],
        unique=False,
        postgresql_where=sa.text("status <> 'matched'"),
    )
    op.create_table(
        "spotify_tracks",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("artist_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("album_id", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("popularity", sa.SmallInteger(), nullable=True),
        sa.Column("isrc", sa.Text(), nullable=True),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("release_date_precision", sa.Text(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spotify_tracks")),
    )
    op.add_column("listens", sa.Column("match_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "listens", sa.Column("spotify_artist_ids", postgresql.ARRAY(sa.Text()), nullable=True)
    )
    op.add_column("listens", sa.Column("spotify_album_id", sa.Text(), nullable=True))
    op.add_column("listens", sa.Column("duration_ms", sa.Integer(), nullable=True))
    op.add_column("listens", sa.Column("popularity", sa.SmallInteger(), nullable=True))
    op.add_column("listens", sa.Column("isrc", sa.Text(), nullable=True))
    op.add_column("listens", sa.Column("release_date", sa.Date(), nullable=True))
    op.add_column(
        "listens",
        sa.Column(
            "enrichment_status", sa.Text(), server_default=sa.text("'pending'"), nullable=False
        ),
    )
    op.add_column(
        "listens",
        sa.Column(
            "enrichment_attempts", sa.SmallInteger(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column("listens", sa.Column("enrichment_error", sa.Text(), nullable=True))
    op.drop_index(
        op.f("ix_listens_unenriched"),
        table_name="listens",
        postgresql_where="(enriched_at IS NULL)",
    )
    op.create_index(op.f("ix_listens_enriched_at"), "listens", ["enriched_at"], unique=False)
    op.create_index(
        "ix_listens_enrichment_pending",
        "listens",
        ["user_id"],
        unique=False,
        postgresql_where=sa.text("enrichment_status = 'pending'"),
    )
    op.create_index(op.f("ix_listens_match_id"), "listens", ["match_id"], unique=False)
    op.create_index(
        "ix_listens_unregistered",
        "listens",
        ["user_id", "id"],
        unique=False,
        postgresql_where=sa.text("enrichment_status = 'pending' AND match_id IS NULL"),
    )
    op.create_foreign_key(
        op.f("fk_listens_match_id_spotify_matches"),
        "listens",
        "spotify_matches",
        ["match_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.add_column("spotify_tokens", sa.Column("revoked_reason", sa.Text(), nullable=True))
    op.alter_column(
        "spotify_tokens", "refresh_token_encrypted", existing_type=sa.TEXT(), nullable=True
    )
    op.add_column(
        "upload_jobs", sa.Column("enrichment_queued_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_upload_jobs_enrichment_unqueued",
        "upload_jobs",
        ["id"],
        unique=False,
        postgresql_where=sa.text("status = 'completed' AND enrichment_queued_at IS NULL"),
    )
    op.create_check_constraint(
        "enrichment_status",
        "listens",
        "enrichment_status IN ('pending', 'matched', 'not_found', 'failed')",
    )
    # Uploads completed before this revision are left to the hourly enrich_pending rather
    # than all dispatched at once the moment the workers start.
    op.execute(
        "UPDATE upload_jobs SET enrichment_queued_at = coalesce(completed_at, now()) "
        "WHERE status = 'completed'"
    )
    op.execute(sql("upload_jobs_notify_completed"))


def downgrade() -> None:
    op.execute("DROP TRIGGER upload_jobs_notify_completed ON upload_jobs")
    op.execute("DROP FUNCTION notify_upload_completed()")
    op.drop_constraint("enrichment_status", "listens", type_="check")
    # A revoked connection has no token left to keep.
    op.execute("DELETE FROM spotify_tokens WHERE refresh_token_encrypted IS NULL")
    op.drop_index(
        "ix_upload_jobs_enrichment_unqueued",
        table_name="upload_jobs",
        postgresql_where=sa.text("status = 'completed' AND enrichment_queued_at IS NULL"),
    )
    op.drop_column("upload_jobs", "enrichment_queued_at")
    op.alter_column(
        "spotify_tokens", "refresh_token_encrypted", existing_type=sa.TEXT(), nullable=False
    )
    op.drop_column("spotify_tokens", "revoked_reason")
    op.drop_constraint(op.f("fk_listens_match_id_spotify_matches"), "listens", type_="foreignkey")
    op.drop_index(
        "ix_listens_unregistered",
        table_name="listens",
        postgresql_where=sa.text("enrichment_status = 'pending' AND match_id IS NULL"),
    )
    op.drop_index(op.f("ix_listens_match_id"), table_name="listens")
    op.drop_index(
        "ix_listens_enrichment_pending",
        table_name="listens",
        postgresql_where=sa.text("enrichment_status = 'pending'"),
    )
    op.drop_index(op.f("ix_listens_enriched_at"), table_name="listens")
    op.create_index(
        op.f("ix_listens_unenriched"),
        "listens",
        ["id"],
        unique=False,
        postgresql_where="(enriched_at IS NULL)",
    )
    op.drop_column("listens", "enrichment_error")
    op.drop_column("listens", "enrichment_attempts")
    op.drop_column("listens", "enrichment_status")
    op.drop_column("listens", "release_date")
    op.drop_column("listens", "isrc")
    op.drop_column("listens", "popularity")
    op.drop_column("listens", "duration_ms")
    op.drop_column("listens", "spotify_album_id")
    op.drop_column("listens", "spotify_artist_ids")
    op.drop_column("listens", "match_id")
    op.drop_table("spotify_tracks")
    op.drop_index(
        "ix_spotify_matches_unresolved",
        table_name="spotify_matches",
        postgresql_where=sa.text("status <> 'matched'"),
    )
    op.drop_table("spotify_matches")
    op.drop_index("ix_spotify_artists_unfetched", table_name="spotify_artists")
    op.drop_table("spotify_artists")
