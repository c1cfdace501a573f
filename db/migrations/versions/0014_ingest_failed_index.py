"""Media ingest: failed jobs counted from an index of their own, so ``/metrics`` (scraped
every 15 s, a 50 ms budget) and the failed list need not scan every finished job. Failed
jobs are few beside done ones, and leave the index when retried or cleared.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_ingest_jobs_failed",
        "ingest_jobs",
        ["id"],
        unique=False,
        postgresql_where=sa.text("status = 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_ingest_jobs_failed", table_name="ingest_jobs")
