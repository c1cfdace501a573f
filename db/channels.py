"""The PostgreSQL NOTIFY channels: the names database triggers and their listeners share.

A trigger (``db/triggers/*.sql``) calls ``pg_notify(<channel>, ...)`` when a row needs work;
the outbox dispatcher (``worker.ledger.outbox``) LISTENs on the channel of each of its
sources. SQL cannot import these constants, so a test reads every trigger file and checks
that each channel it notifies is one named here.
"""

from __future__ import annotations

# A background_tasks row was inserted: its message may need publishing.
BACKGROUND_TASKS = "background_tasks"
# An upload job reached ``completed``: its listens may need enriching.
UPLOAD_JOBS_COMPLETED = "upload_jobs_completed"

# A job's status changed and was written to job_status_changes: workflows may fire.
JOB_STATUS_CHANGES = "job_status_changes"

# An ingest job waits for a message, or left processing (room for the next): publish.
INGEST_JOBS = "ingest_jobs"

ALL: frozenset[str] = frozenset(
    {BACKGROUND_TASKS, UPLOAD_JOBS_COMPLETED, JOB_STATUS_CHANGES, INGEST_JOBS}
)
