"""The live schedule: entries, their audit trail, fires keyed by slot, the beat leader.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "beat_leader",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_beat_leader_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_beat_leader")),
    )
    op.create_table(
        "schedule_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_changes")),
    )
    op.create_index(
        "ix_schedule_changes_entry_at",
        "schedule_changes",
        ["entry", sa.literal_column("at DESC")],
        unique=False,
    )
    op.create_table(
        "schedule_entries",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column(
            "args",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "kwargs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("cron", sa.Text(), nullable=True),
        sa.Column("every_seconds", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("missed", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("edited", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("default_fingerprint", sa.Text(), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "missed IN ('run_once', 'skip')", name=op.f("ck_schedule_entries_missed_policy")
        ),
        sa.CheckConstraint(
            "origin IN ('default', 'operator')", name=op.f("ck_schedule_entries_origin")
        ),
        sa.CheckConstraint(
            "(cron IS NULL) <> (every_seconds IS NULL)", name=op.f("ck_schedule_entries_one_timing")
        ),
        sa.CheckConstraint(
            "every_seconds IS NULL OR every_seconds >= 1",
            name=op.f("ck_schedule_entries_every_positive"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_schedule_entries")),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "fired_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("args", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("kwargs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=True),
        sa.Column("manual", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("entry", "slot", name=op.f("pk_schedule_fires")),
    )
    op.create_index("ix_schedule_fires_fired_at", "schedule_fires", ["fired_at"], unique=False)
    op.create_index("ix_schedule_fires_task_id", "schedule_fires", ["task_id"], unique=False)
    op.create_index(
        "ix_schedule_fires_unpublished",
        "schedule_fires",
        ["fired_at"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_schedule_fires_unpublished",
        table_name="schedule_fires",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_index("ix_schedule_fires_task_id", table_name="schedule_fires")
    op.drop_index("ix_schedule_fires_fired_at", table_name="schedule_fires")
    op.drop_table("schedule_fires")
    op.drop_table("schedule_entries")
    op.drop_index("ix_schedule_changes_entry_at", table_name="schedule_changes")
    op.drop_table("schedule_changes")
    op.drop_table("beat_leader")
