"""The music domain, the system's own records (task_runs, dead_letters) and their indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 15:36:24.784825
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artists",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "genres", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artists")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.Column("task_name", sa.Text(), nullable=True),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("worker_host", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_table(
        "task_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("task_name", sa.Text(), nullable=False),
        sa.Column("args_summary", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("delivery", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runtime_seconds", sa.Double(), nullable=True),
        sa.Column("worker_host", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result_summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_runs")),
    )
    op.create_index("ix_task_runs_started_at", "task_runs", ["started_at"], unique=False)
    op.create_index("ix_task_runs_task_id", "task_runs", ["task_id"], unique=False)
    op.create_index(
        "ix_task_runs_task_name_started_at",
        "task_runs",
        ["task_name", sa.literal_column("started_at DESC")],
        unique=False,
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_table(
        "albums",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("artist_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["artist_id"],
            ["artists.id"],
            name=op.f("fk_albums_artist_id_artists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_albums")),
    )
    op.create_index(op.f("ix_albums_artist_id"), "albums", ["artist_id"], unique=False)
    op.create_table(
        "smart_playlists",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("playlist_type", sa.Text(), nullable=False),
        sa.Column("track_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column(
            "generated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "playlist_type IN ('daily_mix', 'discovery_weekly', 'new_for_you',"
            " 'forgotten_favorites')",
            name=op.f("ck_smart_playlists_playlist_type"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_smart_playlists_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smart_playlists")),
        sa.UniqueConstraint(
            "user_id", "playlist_type", name=op.f("uq_smart_playlists_user_id_playlist_type")
        ),
    )
    op.create_index(
        op.f("ix_smart_playlists_expires_at"), "smart_playlists", ["expires_at"], unique=False
    )
    op.create_index(
        "ix_smart_playlists_playlist_type", "smart_playlists", ["playlist_type"], unique=False
    )
    op.create_table(
        "spotify_tokens",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=True),
        sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column(
            "authorized_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_spotify_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_spotify_tokens")),
    )
    op.create_table(
        "upload_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed')",
            name=op.f("ck_upload_jobs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_upload_jobs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upload_jobs")),
    )
    op.create_index(op.f("ix_upload_jobs_user_id"), "upload_jobs", ["user_id"], unique=False)
    op.create_table(
        "user_listening_stats",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("total_plays", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total_ms_played", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("unique_tracks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("unique_artists", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_played_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_played_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_listening_stats_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_listening_stats")),
    )
    op.create_table(
        "listens",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("upload_id", sa.BigInteger(), nullable=True),
        sa.Column("played_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("artist_name", sa.Text(), nullable=False),
        sa.Column("track_name", sa.Text(), nullable=False),
        sa.Column("album_name", sa.Text(), nullable=True),
        sa.Column("ms_played", sa.Integer(), nullable=True),
        sa.Column("spotify_track_id", sa.Text(), nullable=True),
        sa.Column("enriched_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["upload_jobs.id"],
            name=op.f("fk_listens_upload_id_upload_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_listens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listens")),
    )
    op.create_index(
        "ix_listens_unenriched",
        "listens",
        ["id"],
        unique=False,
        postgresql_where=sa.text("enriched_at IS NULL"),
    )
    op.create_index(op.f("ix_listens_upload_id"), "listens", ["upload_id"], unique=False)
    op.create_index(op.f("ix_listens_user_id"), "listens", ["user_id"], unique=False)
    op.create_table(
        "tracks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("artist_id", sa.BigInteger(), nullable=False),
        sa.Column("album_id", sa.BigInteger(), nullable=True),
        sa.Column("genre", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("popularity", sa.SmallInteger(), nullable=True),
        sa.Column("release_date", sa.Date(), nullable=True),
        sa.Column("audio_path", sa.Text(), nullable=True),
        sa.Column("mood", sa.Text(), nullable=True),
        sa.Column("energy_level", sa.Double(), nullable=True),
        sa.Column("tempo", sa.Double(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["album_id"], ["albums.id"], name=op.f("fk_tracks_album_id_albums"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["artist_id"],
            ["artists.id"],
            name=op.f("fk_tracks_artist_id_artists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracks")),
    )
    op.create_index(op.f("ix_tracks_album_id"), "tracks", ["album_id"], unique=False)
    op.create_index(op.f("ix_tracks_artist_id"), "tracks", ["artist_id"], unique=False)
    op.create_index(op.f("ix_tracks_genre"), "tracks", ["genre"], unique=False)
    op.create_index(op.f("ix_tracks_release_date"), "tracks", ["release_date"], unique=False)
    op.create_table(
        "background_tasks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("track_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed')",
            name=op.f("ck_background_tasks_status"),
        ),
        sa.ForeignKeyConstraint(
            ["track_id"],
            ["tracks.id"],
            name=op.f("fk_background_tasks_track_id_tracks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_background_tasks")),
    )
    op.create_index(
        "ix_background_tasks_status_created_at",
        "background_tasks",
        ["status", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_background_tasks_track_id"), "background_tasks", ["track_id"], unique=False
    )
    op.create_table(
        "play_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("played_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ms_played", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["track_id"],
            ["tracks.id"],
            name=op.f("fk_play_history_track_id_tracks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_play_history_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_play_history")),
    )
    op.create_index("ix_play_history_played_at", "play_history", ["played_at"], unique=False)
    op.create_index("ix_play_history_track_id", "play_history", ["track_id"], unique=False)
    op.create_index(
        "ix_play_history_user_id_played_at", "play_history", ["user_id", "played_at"], unique=False
    )
    op.create_table(
        "trending_tracks",
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("trend_score", sa.Double(), nullable=False),
        sa.Column("play_count_24h", sa.Integer(), nullable=False),
        sa.Column("play_count_7d", sa.Integer(), nullable=False),
        sa.Column("unique_listeners_24h", sa.Integer(), nullable=False),
        sa.Column("unique_listeners_7d", sa.Integer(), nullable=False),
        sa.Column("calculated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["track_id"],
            ["tracks.id"],
            name=op.f("fk_trending_tracks_track_id_tracks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("track_id", name=op.f("pk_trending_tracks")),
    )


def downgrade() -> None:
    op.drop_table("trending_tracks")
    op.drop_index("ix_play_history_user_id_played_at", table_name="play_history")
    op.drop_index("ix_play_history_track_id", table_name="play_history")
    op.drop_index("ix_play_history_played_at", table_name="play_history")
    op.drop_table("play_history")
    op.drop_index(op.f("ix_background_tasks_track_id"), table_name="background_tasks")
    op.drop_index("ix_background_tasks_status_created_at", table_name="background_tasks")
    op.drop_table("background_tasks")
    op.drop_index(op.f("ix_tracks_release_date"), table_name="tracks")
    op.drop_index(op.f("ix_tracks_genre"), table_name="tracks")
    op.drop_index(op.f("ix_tracks_artist_id"), table_name="tracks")
    op.drop_index(op.f("ix_tracks_album_id"), table_name="tracks")
    op.drop_table("tracks")
    op.drop_index(op.f("ix_listens_user_id"), table_name="listens")
    op.drop_index(op.f("ix_listens_upload_id"), table_name="listens")
    op.drop_index(
        "ix_listens_unenriched",
        table_name="listens",
        postgresql_where=sa.text("enriched_at IS NULL"),
    )
    op.drop_table("listens")
    op.drop_table("user_listening_stats")
    op.drop_index(op.f("ix_upload_jobs_user_id"), table_name="upload_jobs")
    op.drop_table("upload_jobs")
    op.drop_table("spotify_tokens")
    op.drop_index("ix_smart_playlists_playlist_type", table_name="smart_playlists")
    op.drop_index(op.f("ix_smart_playlists_expires_at"), table_name="smart_playlists")
    op.drop_table("smart_playlists")
    op.drop_index(op.f("ix_albums_artist_id"), table_name="albums")
    op.drop_table("albums")
    op.drop_table("users")
    op.drop_index("ix_task_runs_task_name_started_at", table_name="task_runs")
    op.drop_index("ix_task_runs_task_id", table_name="task_runs")
    op.drop_index("ix_task_runs_started_at", table_name="task_runs")
    op.drop_table("task_runs")
    op.drop_table("dead_letters")
    op.drop_table("artists")
