"""Event workflows: the rules, the status-change outbox and its trigger on each source,
execution logs, notifications.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from db.triggers import sql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_status_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("old_status", sa.Text(), nullable=True),
        sa.Column("new_status", sa.Text(), nullable=False),
        sa.Column("job", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("origin", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_status_changes")),
    )
    op.create_index(
        "ix_job_status_changes_changed_at", "job_status_changes", ["changed_at"], unique=False
    )
    op.create_index(
        "ix_job_status_changes_unmatched",
        "job_status_changes",
        ["id"],
        unique=False,
        postgresql_where=sa.text("matched_at IS NULL"),
    )
    op.create_table(
        "automation_workflows",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("on_statuses", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
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
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_automation_workflows_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automation_workflows")),
    )
    op.create_index(
        "ix_automation_workflows_source_active",
        "automation_workflows",
        ["source", "active"],
        unique=False,
    )
    op.create_index(
        op.f("ix_automation_workflows_user_id"), "automation_workflows", ["user_id"], unique=False
    )
    op.create_table(
        "automation_execution_logs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workflow_id", sa.BigInteger(), nullable=False),
        sa.Column("change_id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("old_status", sa.Text(), nullable=True),
        sa.Column("new_status", sa.Text(), nullable=False),
        sa.Column("trigger_data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("chain", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("debounce_key", sa.Text(), nullable=True),
        sa.Column("concurrency_key", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column(
            "action_results",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "run_after", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("celery_task_id", sa.Text(), nullable=True),
        sa.Column("worker_host", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'skipped')",
            name=op.f("ck_automation_execution_logs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["automation_workflows.id"],
            name=op.f("fk_automation_execution_logs_workflow_id_automation_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automation_execution_logs")),
        sa.UniqueConstraint(
            "workflow_id",
            "change_id",
            name=op.f("uq_automation_execution_logs_workflow_id_change_id"),
        ),
    )
    op.create_index(
        "ix_automation_execution_logs_active",
        "automation_execution_logs",
        ["status", "run_after"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'processing')"),
    )
    op.create_index(
        "ix_automation_execution_logs_created_at",
        "automation_execution_logs",
        ["created_at"],
        unique=False,
    )
    op.create_index(
        "ix_automation_execution_logs_job_status",
        "automation_execution_logs",
        ["workflow_id", "job_id", "new_status"],
        unique=False,
        postgresql_where=sa.text("status <> 'skipped'"),
    )
    op.create_index(
        "ix_automation_execution_logs_workflow_created",
        "automation_execution_logs",
        ["workflow_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "uq_automation_execution_logs_key",
        "automation_execution_logs",
        ["workflow_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("status <> 'skipped'"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("workflow_id", sa.BigInteger(), nullable=True),
        sa.Column("execution_id", sa.BigInteger(), nullable=True),
        sa.Column("action_index", sa.Integer(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["automation_workflows.id"],
            name=op.f("fk_notifications_workflow_id_automation_workflows"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "execution_id", "action_index", name=op.f("uq_notifications_execution_id_action_index")
        ),
    )
    op.create_index(op.f("ix_notifications_user_id"), "notifications", ["user_id"], unique=False)

    op.execute(sql("job_status_changes"))


def downgrade() -> None:
    for table in ("upload_jobs", "background_tasks"):
        op.execute(f"DROP TRIGGER {table}_status_inserted ON {table}")
        op.execute(f"DROP TRIGGER {table}_status_changed ON {table}")
    op.execute("DROP FUNCTION record_job_status_change()")
    op.drop_index(op.f("ix_notifications_user_id"), table_name="notifications")
    op.drop_table("notifications")
    op.drop_index(
        "uq_automation_execution_logs_key",
        table_name="automation_execution_logs",
        postgresql_where=sa.text("status <> 'skipped'"),
    )
    op.drop_index(
        "ix_automation_execution_logs_workflow_created", table_name="automation_execution_logs"
    )
    op.drop_index(
        "ix_automation_execution_logs_job_status",
        table_name="automation_execution_logs",
        postgresql_where=sa.text("status <> 'skipped'"),
    )
    op.drop_index("ix_automation_execution_logs_created_at", table_name="automation_execution_logs")
    op.drop_index(
        "ix_automation_execution_logs_active",
        table_name="automation_execution_logs",
        postgresql_where=sa.text("status IN ('pending', 'processing')"),
    )
    op.drop_table("automation_execution_logs")
    op.drop_index(op.f("ix_automation_workflows_user_id"), table_name="automation_workflows")
    op.drop_index("ix_automation_workflows_source_active", table_name="automation_workflows")
    op.drop_table("automation_workflows")
    op.drop_index(
        "ix_job_status_changes_unmatched",
        table_name="job_status_changes",
        postgresql_where=sa.text("matched_at IS NULL"),
    )
    op.drop_index("ix_job_status_changes_changed_at", table_name="job_status_changes")
    op.drop_table("job_status_changes")
