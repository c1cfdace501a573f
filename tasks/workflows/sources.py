"""The tables whose jobs' status changes fire workflows.

Each has the status trigger of ``db/triggers/job_status_changes.sql`` (a test checks that
every source here has it, and nothing else does). A new source is a table with ``id`` and
``status`` columns, an entry here, and the trigger on it in a migration (the ingest jobs'
is in db/triggers/ingest_jobs_notify.sql).
"""

from __future__ import annotations

from dataclasses import dataclass

from db.models import BackgroundTask, IngestJob, UploadJob
from db.models.imports import UPLOAD_STATUSES
from db.models.ingest import INGEST_STATUSES
from db.models.ledger import BACKGROUND_TASK_STATUSES


@dataclass(frozen=True)
class StatusSource:
    table: str
    statuses: tuple[str, ...]
    columns: frozenset[str]  # what conditions and templates may name as job.<column>


SOURCES: dict[str, StatusSource] = {
    source.table: source
    for source in (
        StatusSource("upload_jobs", UPLOAD_STATUSES, frozenset(UploadJob.__table__.columns.keys())),
        StatusSource(
            "background_tasks",
            BACKGROUND_TASK_STATUSES,
            frozenset(BackgroundTask.__table__.columns.keys()),
        ),
        StatusSource("ingest_jobs", INGEST_STATUSES, frozenset(IngestJob.__table__.columns.keys())),
    )
}
