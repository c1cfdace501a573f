"""The ingest family's tasks: ``ingest.process`` (published by the dispatcher, one per job)
and ``ingest.backfill`` (sent by ``automation ingest backfill``). The work is in
``tasks.ingest.pipeline`` and ``tasks.ingest.backfill``, imported by the task bodies: every
process imports the task modules (the CLI, beat, the console), and only an ingest worker
needs the media libraries and the storage behind them."""

from __future__ import annotations

from typing import Any, Literal

from celery.exceptions import Ignore

from worker.arguments import Id
from worker.backoff import whole_seconds
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.errors import PermanentError
from worker.publishing import publish_after_commit
from worker.settings import get_settings

# Returns to the queue while a step's concurrency limit is reached, before the message
# gives up (the job stays queued; the lost-message rule publishes it again).
MAX_BUSY_DEFERRALS = 200


class IngestJobFailedError(PermanentError):
    """The job failed; its error is on the job (``automation ingest status``)."""


@app.task(name="ingest.process", bind=True)
def process(self: AutomationTask, job_id: Id) -> dict[str, Any]:
    from tasks.ingest.pipeline import Pipeline
    from tasks.ingest.storage import open_bucket

    request = self.request
    settings = get_settings()
    pipeline = Pipeline(
        settings,
        open_bucket(settings),
        celery_task_id=str(request.id),
        hostname=str(request.hostname),
        resumable=bool(request.retries) or getattr(request, "delivery", 1) > 1,
    )
    verdict = pipeline.run(job_id)
    if verdict.status in ("not claimed", "paused"):
        self.request.run_outcome = "duplicate"
        raise Ignore(verdict.detail)
    if verdict.retry_in is not None:
        raise self.retry(
            countdown=whole_seconds(verdict.retry_in),
            # Attempts are bounded by the job's max_attempts; this bounds the deferrals of
            # a step held at its concurrency limit.
            max_retries=MAX_BUSY_DEFERRALS,
            exc=RuntimeError(verdict.detail),
        )
    if verdict.status == "failed":
        # The job's record has the error; the run is failed too, so Flower and the run
        # history show it where operators look.
        raise IngestJobFailedError(f"ingest job {job_id} failed: {verdict.detail}")
    return {"job_id": job_id, "status": verdict.status, "track_id": verdict.track_id}


@app.task(name="ingest.backfill", bind=True)
def backfill(
    self: AutomationTask, step: Literal["analysis", "images"], after_track_id: int = 0
) -> dict[str, Any]:
    from tasks.ingest.backfill import backfill_batch
    from tasks.ingest.storage import open_bucket

    settings = get_settings()
    done = backfill_batch(self.session, open_bucket(settings), settings, step, after_track_id)
    if done.more:
        # The next batch once this one's rows are committed.
        publish_after_commit(
            self.session,
            self.signature(kwargs={"step": step, "after_track_id": done.last_track_id}),
        )
    return {
        "step": step,
        "tracks": done.tracks,
        "last_track_id": done.last_track_id,
        "more": done.more,
    }
