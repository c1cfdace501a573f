"""Listening analytics: insertion-order watermark, per-user rollups, trending rank.

- play_history.ingest_xid: the inserting transaction's id. Aggregation folds the plays
  whose transaction finished since the last run (see tasks/listening.py for why a plain
  id watermark would lose plays), with a BRIN index: plays are appended in that order.
- user_track_plays / user_artist_plays: all-time rollups, so distinct counts stay
  incremental (a pair is new or it is not); playlists read favourites from them too.
- listening_stats_dirty: users whose plays were deleted or changed (a deleted track
  cascades to its plays); the next aggregation rebuilds them from scratch.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.triggers import sql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_XID = sa.text("(pg_current_xact_id())::text::bigint")


def upgrade() -> None:
    op.add_column(
        "play_history",
        sa.Column("ingest_xid", sa.BigInteger(), server_default=CURRENT_XID, nullable=False),
    )
    op.create_index(
        "ix_play_history_ingest_xid",
        "play_history",
        ["ingest_xid"],
        postgresql_using="brin",
        postgresql_with={"pages_per_range": 32},
    )

    op.create_table(
        "aggregation_watermarks",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("last_xid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_aggregation_watermarks")),
    )
    op.create_table(
        "user_track_plays",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("play_count", sa.Integer(), nullable=False),
        sa.Column("ms_played", sa.BigInteger(), nullable=False),
        sa.Column("first_played_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_played_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            ondelete="CASCADE",
            name=op.f("fk_user_track_plays_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["track_id"],
            ["tracks.id"],
            ondelete="CASCADE",
            name=op.f("fk_user_track_plays_track_id_tracks"),
        ),
        sa.PrimaryKeyConstraint("user_id", "track_id", name=op.f("pk_user_track_plays")),
    )
    op.create_index("ix_user_track_plays_track_id", "user_track_plays", ["track_id"])
    op.create_table(
        "user_artist_plays",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("artist_id", sa.BigInteger(), nullable=False),
        sa.Column("play_count", sa.Integer(), nullable=False),
        sa.Column("last_played_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            ondelete="CASCADE",
            name=op.f("fk_user_artist_plays_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["artist_id"],
            ["artists.id"],
            ondelete="CASCADE",
            name=op.f("fk_user_artist_plays_artist_id_artists"),
        ),
        sa.PrimaryKeyConstraint("user_id", "artist_id", name=op.f("pk_user_artist_plays")),
    )
    op.create_index("ix_user_artist_plays_artist_id", "user_artist_plays", ["artist_id"])
    # The rollups and the stats are updated in place every day at random pages. Free room
    # on each page lets an update stay on its page with no index entry to add (a HOT
    # update), which halves the pages each update touches.
    for table in ("user_track_plays", "user_artist_plays", "user_listening_stats"):
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
    op.create_table(
        "listening_stats_dirty",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_listening_stats_dirty")),
    )

    columns: list[sa.Column[Any]] = [
        sa.Column("plays_last_7d", sa.Integer(), server_default="0"),
        sa.Column("plays_last_30d", sa.Integer(), server_default="0"),
        sa.Column("top_artists", postgresql.JSONB(), server_default="[]"),
        sa.Column("top_genres", postgresql.JSONB(), server_default="[]"),
        sa.Column("top_tracks", postgresql.JSONB(), server_default="[]"),
        sa.Column(
            "hourly_plays",
            postgresql.ARRAY(sa.Integer()),
            server_default=sa.text("array_fill(0, ARRAY[24])"),
        ),
    ]
    for column in columns:
        column.nullable = False
        op.add_column("user_listening_stats", column)
    op.add_column(
        "user_listening_stats",
        sa.Column(
            "total_minutes",
            sa.Numeric(14, 1),
            sa.Computed("round(total_ms_played / 60000.0, 1)", persisted=True),
            nullable=False,
        ),
    )
    op.add_column("user_listening_stats", sa.Column("window_end", sa.DateTime(timezone=True)))
    # Users whose 30-day figures are non-zero: the ones that go stale as time passes.
    op.create_index(
        "ix_user_listening_stats_active",
        "user_listening_stats",
        ["user_id"],
        postgresql_where=sa.text("plays_last_30d > 0"),
    )

    op.add_column("trending_tracks", sa.Column("rank", sa.Integer(), nullable=False))
    op.create_index("ix_trending_tracks_rank", "trending_tracks", ["rank"], unique=True)

    op.execute(sql("play_history_mark_stats_dirty"))


def downgrade() -> None:
    op.execute("DROP TRIGGER play_history_updated ON play_history")
    op.execute("DROP TRIGGER play_history_deleted ON play_history")
    op.execute("DROP FUNCTION mark_listening_stats_dirty()")
    op.drop_index("ix_trending_tracks_rank", table_name="trending_tracks")
    op.drop_column("trending_tracks", "rank")
    op.drop_index("ix_user_listening_stats_active", table_name="user_listening_stats")
    for column in (
        "window_end",
        "total_minutes",
        "hourly_plays",
        "top_tracks",
        "top_genres",
        "top_artists",
        "plays_last_30d",
        "plays_last_7d",
    ):
        op.drop_column("user_listening_stats", column)
    op.execute("ALTER TABLE user_listening_stats RESET (fillfactor)")
    op.drop_table("listening_stats_dirty")
    op.drop_index("ix_user_artist_plays_artist_id", table_name="user_artist_plays")
    op.drop_table("user_artist_plays")
    op.drop_index("ix_user_track_plays_track_id", table_name="user_track_plays")
    op.drop_table("user_track_plays")
    op.drop_table("aggregation_watermarks")
    op.drop_index("ix_play_history_ingest_xid", table_name="play_history")
    op.drop_column("play_history", "ingest_xid")
