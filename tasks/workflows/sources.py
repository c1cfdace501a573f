"""The tables whose jobs' status changes fire workflows.

Each has the status trigger of ``db/triggers/job_status_changes.sql`` (a test checks that
every source here has it, and nothing else does). A new source (the ingest jobs) is a
table with ``id`` and ``status`` columns, an entry here, and the trigger on it in a
migration.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.models import BackgroundTask, UploadJob
from db.models.imports import UPLOAD_STATUSES
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
    )
}
