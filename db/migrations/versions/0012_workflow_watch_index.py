"""Event workflows: the status trigger finds whether some active workflow wants a change
with one index lookup (db/triggers/job_status_changes_v2.sql says why and what).

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

from alembic import op

from db.triggers import sql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sql("job_status_changes_v2"))


def downgrade() -> None:
    # The first version's function, as 0011 created it (its triggers are untouched here).
    first = sql("job_status_changes")
    function = first[first.index("CREATE FUNCTION") : first.index("CREATE TRIGGER")]
    op.execute(function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute("DROP INDEX ix_automation_workflows_watch")
    op.execute("DROP FUNCTION workflow_watch_keys(text, text[])")
