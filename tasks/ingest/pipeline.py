"""Running one ingest job: claim it, run the steps it has not finished, settle it.

The claim (``queued`` -> ``processing``, the attempt counted) commits before any work, so
the rescuer sees who holds the job. Each step's output commits as soon as the step ends
(``outputs[<step>]``), in the transaction that moves the job to its next step, so a retry
starts at the step that failed and never redoes a finished one; the last step (publish)
writes the catalogue rows and the job's ``done`` in one transaction, so a job makes one
track or none. Every write after the claim is fenced by it (the run's message id and
attempt): a run presumed dead and replaced changes nothing, and a duplicate message finds
the job taken and does nothing.

Failures: a file that cannot be ingested (not media, empty, truncated, too large, a
missing object) fails at once with its reason; a transient one (the database, Redis, the
storage) releases the job with a backoff (exponential with jitter) until
``max_attempts`` is spent, then fails it with the last error; anything unexpected fails it
at once with the error, for an operator to read and retry. A worker killed mid-job leaves
it ``processing``: its message comes back and resumes it, or the rescuer requeues it once
the worker's lease has expired.

Pausing the pipeline stops claims of queued jobs (a message that arrives drops its job's
publication, and the resume publishes it again); running jobs finish.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.queries import queries
from db.session import session_scope
from tasks.ingest import catalogue, steps
from tasks.ingest.storage import Bucket, StorageUnavailableError
from worker.backoff import backoff
from worker.base_task import TRANSIENT_ERRORS
from worker.errors import PermanentError
from worker.settings import Settings

log = logging.getLogger(__name__)
SQL = queries("tasks.ingest", "ingest")
TRANSIENT: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, StorageUnavailableError)
# A step whose concurrency limit is reached is waited for this long (polling), then the job
# goes back to the queue for a while, so a worker slot is never held indefinitely.
STEP_WAIT_SECONDS = 30.0
BUSY_RETRY_SECONDS = 5.0


class ClaimLostError(Exception):
    """The job was taken from this run (rescued as orphaned): nothing more of it counts."""


class StepBusyError(Exception):
    """A step's concurrency limit stayed reached for STEP_WAIT_SECONDS."""


class NoCoverTargetError(PermanentError):
    """An image job that names no track (``track_id``) to be the cover of."""


@dataclass(frozen=True)
class Verdict:
    """What became of a run. ``retry_in``: send the message again after this many seconds."""

    status: str  # done, failed, retry, busy, paused, not claimed
    detail: str = ""
    retry_in: float | None = None
    track_id: int | None = None


@dataclass(frozen=True)
class Claim:
    job_id: int
    attempt: int
    max_attempts: int
    object_path: str
    cover_path: str | None
    kind: str | None
    outputs: dict[str, Any]
    user_id: int | None
    track_id: int | None


@dataclass(frozen=True)
class Finished:
    """A step that ended, with what it made, not recorded yet."""

    step: str
    output: dict[str, Any]
    kind: str | None = None  # the probe's finding: the job's kind


def describe(exc: BaseException) -> str:
    """One line for the job's ``error``: what failed, in the error's own words."""
    words = " ".join(str(exc).split())
    if isinstance(exc, PermanentError):
        return words[:2000]
    return f"{type(exc).__name__}: {words}"[:2000]


class Pipeline:
    """Runs ingest jobs for one message: its id, its worker, whether it came before."""

    def __init__(
        self,
        settings: Settings,
        bucket: Bucket,
        *,
        celery_task_id: str,
        hostname: str,
        resumable: bool,
        draw: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
        step_wait_seconds: float = STEP_WAIT_SECONDS,
    ) -> None:
        self.settings = settings
        self.bucket = bucket
        self.celery_task_id = celery_task_id
        self.hostname = hostname
        self.resumable = resumable
        self.draw = draw
        self.sleep = sleep
        self.step_wait_seconds = step_wait_seconds

    def run(self, job_id: int) -> Verdict:  # noqa: PLR0911 (a return per way a run ends)
        claim = self._claim(job_id)
        if isinstance(claim, Verdict):
            return claim
        try:
            return self._steps(claim)
        except ClaimLostError as exc:
            return Verdict("not claimed", str(exc))
        except StepBusyError as exc:
            return self._release(claim, str(exc), BUSY_RETRY_SECONDS, busy=True)
        except TRANSIENT as exc:
            error = describe(exc)
            log.warning("ingest job %s, attempt %s: %s", job_id, claim.attempt, error)
            if claim.attempt < claim.max_attempts:
                delay = backoff(
                    claim.attempt,
                    self.settings.ingest_retry_base_seconds,
                    self.settings.ingest_retry_cap_seconds,
                    self.draw(),
                )
                return self._release(claim, error, delay)
            return self._fail(claim, f"gave up after {claim.attempt} attempts: {error}")
        except PermanentError as exc:
            return self._fail(claim, describe(exc))
        except Exception as exc:
            # Not a property of the file nor of the infrastructure: a defect to look at.
            # Failed at once with the error (retrying a bug only repeats it).
            log.exception("ingest job %s failed unexpectedly", job_id)
            return self._fail(claim, describe(exc))

    # -- the steps -----------------------------------------------------------------------

    def _steps(self, claim: Claim) -> Verdict:
        outputs = dict(claim.outputs)
        # A step's output is recorded in the transaction that enters the next step: one
        # commit between two steps, where a record and an entry each took one.
        finished: Finished | None = None
        with self.bucket.local_copy(claim.object_path) as media:
            if "probe" not in outputs:
                self._enter(claim, "probe")
                probed = steps.probe_step(media, claim.object_path, self.settings.ingest_max_bytes)
                outputs["probe"] = probed
                finished = Finished("probe", probed, kind=probed["kind"])
            kind = outputs["probe"]["kind"]
            target = None
            if kind == "image":
                if finished is not None:
                    # Kept before the cover's target is looked up, which may refuse the job.
                    self._record(claim, finished)
                    finished = None
                target = self._cover_target(claim)
            if kind == "audio" and "analysis" not in outputs:
                self._enter(claim, "analysis", finished)
                analysed = steps.analysis_step(
                    media,
                    self.settings.analysis_max_seconds,
                    self.settings.ingest_waveform_columns,
                )
                outputs["analysis"] = analysed
                finished = Finished("analysis", analysed)
            if "images" not in outputs:
                self._enter(claim, "images", finished)
                if kind == "audio":
                    made = steps.images_step(
                        self.bucket,
                        claim.job_id,
                        title=outputs["probe"]["title"],
                        artist=outputs["probe"]["artist"],
                        peaks=outputs["analysis"]["peaks"],
                        embedded=steps.embedded_cover(media),
                        uploaded=(
                            self.bucket.read_bytes(claim.cover_path) if claim.cover_path else None
                        ),
                        sizes=self.settings.thumbnail_sizes,
                    )
                else:
                    assert target is not None
                    made = steps.images_step(
                        self.bucket,
                        claim.job_id,
                        title=target["title"],
                        artist=target["artist"],
                        peaks=target["peaks"],
                        embedded=None,
                        uploaded=media.read_bytes(),
                        sizes=self.settings.thumbnail_sizes,
                    )
                outputs["images"] = made
                finished = Finished("images", made)
        self._enter(claim, "publish", finished)
        return self._publish(claim, kind, outputs)

    def _cover_target(self, claim: Claim) -> dict[str, Any]:
        """The track an image job is the cover of: its title, artist and waveform peaks."""
        if claim.track_id is None:
            raise NoCoverTargetError(
                "an image on its own needs the track it is the cover of (track_id); to give "
                "a new upload a cover, send it with the audio file (same name, or --cover)"
            )
        with session_scope() as session:
            row = session.execute(SQL["cover_target"], {"id": claim.track_id}).first()
        if row is None:
            raise NoCoverTargetError(f"there is no track {claim.track_id} to be the cover of")
        return {"title": row.title, "artist": row.artist, "peaks": row.peaks or []}

    def _publish(self, claim: Claim, kind: str, outputs: dict[str, Any]) -> Verdict:
        with session_scope() as session:
            if kind == "audio":
                track_id = catalogue.publish_track(
                    session, claim.job_id, self.bucket.location(claim.object_path), outputs
                )
            else:
                assert claim.track_id is not None
                track_id = claim.track_id
                catalogue.store_images(session, track_id, claim.job_id, outputs["images"])
            settled = session.execute(
                SQL["settle_done"],
                {
                    **self._fence(claim),
                    "track_id": track_id,
                    "output": json.dumps({"track_id": track_id}),
                },
            ).first()
            if settled is None:
                # Rolled back with the catalogue rows: the run that holds the job publishes.
                raise ClaimLostError(f"ingest job {claim.job_id} was taken from this run")
        return Verdict("done", f"track {track_id}", track_id=track_id)

    # -- the claim and the writes that name it -------------------------------------------

    def _claim(self, job_id: int) -> Claim | Verdict:
        with session_scope() as session:
            row = session.execute(
                SQL["claim"],
                {
                    "id": job_id,
                    "celery_task_id": self.celery_task_id,
                    "worker_host": self.hostname,
                    "resumable": self.resumable,
                },
            ).first()
            state = None if row else session.execute(SQL["job_state"], {"id": job_id}).first()
            if state is not None and state.status == "queued" and state.paused_at is not None:
                # Paused: this message goes; the resume publishes the job again.
                session.execute(
                    SQL["leave_for_resume"], {"id": job_id, "celery_task_id": self.celery_task_id}
                )
        if row is not None:
            return Claim(
                row.id,
                row.attempts,
                row.max_attempts,
                row.object_path,
                row.cover_path,
                row.kind,
                dict(row.outputs or {}),
                row.user_id,
                row.track_id,
            )
        if state is None:
            return Verdict("not claimed", f"there is no ingest job {job_id}")
        if state.status == "queued" and state.paused_at is not None:
            return Verdict("paused", f"ingest is paused; job {job_id} stays queued")
        if state.status == "queued" and state.run_after > state.now:
            early = (state.run_after - state.now).total_seconds()
            return Verdict("busy", f"due in {early:.1f} s", retry_in=early + 0.05)
        return Verdict("not claimed", f"ingest job {job_id} is {state.status}")

    def _fence(self, claim: Claim) -> dict[str, Any]:
        return {
            "id": claim.job_id,
            "celery_task_id": self.celery_task_id,
            "attempt": claim.attempt,
        }

    def _enter(self, claim: Claim, step: str, finished: Finished | None = None) -> None:
        """Move the job to ``step``, waiting while the step's concurrency limit is reached
        (read live: ``automation ingest config --concurrency``, else the setting).
        ``finished``: the step that just ended, its output recorded by the first try, which
        commits it whether or not the job may enter ``step`` yet."""
        waited_until = time.monotonic() + self.step_wait_seconds
        while True:
            with session_scope() as session:
                if finished is not None:
                    self._write_output(session, claim, finished)
                    finished = None
                live = session.scalar(SQL["step_limit"], {"step": step})
                limit = live if live is not None else self.settings.step_concurrency.get(step)
                if limit is not None:
                    session.execute(SQL["lock_step"], {"step": step})
                entered = session.execute(
                    SQL["enter_step"], {**self._fence(claim), "step": step, "limit": limit}
                ).first()
                holds = entered is not None or (
                    session.execute(SQL["holds"], self._fence(claim)).first() is not None
                )
            if entered is not None:
                return
            if not holds:
                raise ClaimLostError(f"ingest job {claim.job_id} was taken from this run")
            if time.monotonic() >= waited_until:
                raise StepBusyError(f"step {step} is at its concurrency limit ({limit})")
            self.sleep(0.2 + 0.3 * self.draw())

    def _record(self, claim: Claim, finished: Finished) -> None:
        with session_scope() as session:
            self._write_output(session, claim, finished)

    def _write_output(self, session: Session, claim: Claim, finished: Finished) -> None:
        recorded = session.execute(
            SQL["record_step"],
            {
                **self._fence(claim),
                "step": finished.step,
                "output": json.dumps({**finished.output, "attempt": claim.attempt}),
                "kind": finished.kind,
            },
        ).first()
        if recorded is None:
            # Rolled back with whatever else the transaction held.
            raise ClaimLostError(f"ingest job {claim.job_id} was taken from this run")

    def _fail(self, claim: Claim, error: str) -> Verdict:
        with session_scope() as session:
            settled = session.execute(
                SQL["settle_failed"], {**self._fence(claim), "error": error}
            ).first()
        if settled is None:
            return Verdict("not claimed", f"ingest job {claim.job_id} was taken from this run")
        return Verdict("failed", error)

    def _release(self, claim: Claim, error: str, delay: float, *, busy: bool = False) -> Verdict:
        with session_scope() as session:
            released = session.execute(
                SQL["release_busy" if busy else "release_for_retry"],
                {**self._fence(claim), "error": error, "delay": delay},
            ).first()
        if released is None:
            return Verdict("not claimed", f"ingest job {claim.job_id} was taken from this run")
        return Verdict("busy" if busy else "retry", error, retry_in=delay)
