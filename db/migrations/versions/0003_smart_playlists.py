"""Smart playlists: cold-start marker, the period a playlist was drawn for, and indexes.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.triggers import sql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sql("playlist_random"))
    op.add_column(
        "smart_playlists",
        sa.Column("cold_start", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    # The day (daily types) or Monday (weekly types) whose seed drew the playlist.
    op.add_column(
        "smart_playlists",
        sa.Column(
            "period_start", sa.Date(), server_default=sa.text("CURRENT_DATE"), nullable=False
        ),
    )
    # Genre pools (most popular tracks of a genre) and new releases by an artist.
    op.create_index(
        "ix_tracks_genre_popularity",
        "tracks",
        ["genre", sa.text("popularity DESC NULLS LAST")],
    )
    op.create_index("ix_tracks_artist_id_release_date", "tracks", ["artist_id", "release_date"])
    op.create_index("ix_tracks_genre_release_date", "tracks", ["genre", "release_date"])
    op.create_index("ix_users_created_at", "users", ["created_at"])
    op.create_index(
        "ix_user_listening_stats_last_played_at", "user_listening_stats", ["last_played_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_user_listening_stats_last_played_at", table_name="user_listening_stats")
    op.drop_index("ix_users_created_at", table_name="users")
    op.drop_index("ix_tracks_genre_release_date", table_name="tracks")
    op.drop_index("ix_tracks_artist_id_release_date", table_name="tracks")
    op.drop_index("ix_tracks_genre_popularity", table_name="tracks")
    op.drop_column("smart_playlists", "period_start")
    op.drop_column("smart_playlists", "cold_start")
    op.execute("DROP FUNCTION playlist_random(bigint, bigint, bigint)")
