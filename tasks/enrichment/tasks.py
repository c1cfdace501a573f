"""The enrichment family's tasks: ``enrichment.enrich_pending``, ``enrichment.enrich_upload``,
``enrichment.progress``. Scheduling is in ``tasks.enrichment.scheduling``, a run in
``tasks.enrichment.enrich``.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from db.models import UploadJob
from tasks.enrichment.monitoring import enrichment_progress
from tasks.enrichment.scheduling import (
    LEASE_SECONDS,
    Baton,
    UnknownUploadError,
    countdown,
    not_configured,
    run_enrichment,
)
from worker.arguments import BatchSize, Id, OptionalId
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.publishing import publish_after_commit
from worker.redis_client import get_redis
from worker.settings import get_settings

# -- tasks ------------------------------------------------------------------------------------


@app.task(name="enrichment.enrich_pending", bind=True)
def enrich_pending(self: AutomationTask, batch_size: BatchSize | None = None) -> dict[str, Any]:
    settings = get_settings()
    if (skipped := not_configured(settings)) is not None:
        return skipped
    me = self.request.id or str(uuid.uuid4())
    baton = Baton(get_redis())
    if not baton.take(me, LEASE_SECONDS):
        return {"status": "skipped", "reason": "an enrich_pending chain is already running"}
    size = batch_size or settings.enrichment_batch_size
    report = run_enrichment(self.session, settings, upload_id=None, batch_size=size)
    if report.status == "done":
        baton.release(me)
    else:
        successor = str(uuid.uuid4())
        wait = countdown(report)
        baton.hand_over(me, successor, wait + LEASE_SECONDS)
        publish_after_commit(
            self.session,
            enrich_pending.signature(
                kwargs={"batch_size": batch_size}, task_id=successor, countdown=wait
            ),
        )
    return asdict(report)


@app.task(name="enrichment.enrich_upload", bind=True)
def enrich_upload(self: AutomationTask, upload_id: Id) -> dict[str, Any]:
    upload = self.session.get(UploadJob, upload_id)
    if upload is None:
        raise UnknownUploadError(f"no upload_jobs row {upload_id}")
    if upload.status != "completed":
        return {"status": "skipped", "reason": f"upload {upload_id} is {upload.status}"}
    settings = get_settings()
    if (skipped := not_configured(settings)) is not None:
        return {"upload_id": upload_id, **skipped}
    report = run_enrichment(
        self.session, settings, upload_id=upload_id, batch_size=settings.enrichment_batch_size
    )
    if report.status != "done":
        publish_after_commit(
            self.session,
            enrich_upload.signature(args=(upload_id,), countdown=countdown(report)),
        )
    return {"upload_id": upload_id, **asdict(report)}


@app.task(name="enrichment.progress", bind=True)
def progress(self: AutomationTask, user_id: OptionalId = None) -> dict[str, Any]:
    return enrichment_progress(self.session, user_id)
