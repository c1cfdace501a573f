"""Operating the pipeline: pause and resume, the live batch size, rate and per-step
concurrency, retrying and clearing failed jobs, and the statistics ``automation ingest
status``, ``automation status``, the API and the alert read.

Controls live in ``ingest_pipeline``'s one row, read by every claim and dispatch, so a
change takes effect at once in every worker, with no restart; each change wakes the
dispatchers (NOTIFY), so a resume or a larger batch starts jobs within the second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from db.channels import INGEST_JOBS
from db.models import INGEST_STEPS, IngestJob, IngestPipeline
from db.queries import queries
from worker.errors import PermanentError
from worker.settings import Settings

SQL = queries("tasks.ingest", "ingest")
HOUR = dt.timedelta(hours=1)


class ControlError(PermanentError):
    """A control value that cannot be: an unknown step, a limit below one."""


def _wake(session: Session) -> None:
    session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": INGEST_JOBS})


def _row(session: Session) -> None:
    session.execute(SQL["set_controls"])


def pause(session: Session, by: str, now: dt.datetime) -> bool:
    """Stop new jobs from starting; False if it was paused already (kept as it was)."""
    _row(session)
    changed = session.execute(
        update(IngestPipeline)
        .where(IngestPipeline.id == 1, IngestPipeline.paused_at.is_(None))
        .values(paused_at=now, paused_by=by, updated_at=now)
        .returning(IngestPipeline.id)
    ).first()
    return changed is not None


def resume(session: Session, now: dt.datetime) -> bool:
    """Start queued jobs again; False if it was not paused."""
    _row(session)
    changed = session.execute(
        update(IngestPipeline)
        .where(IngestPipeline.id == 1, IngestPipeline.paused_at.is_not(None))
        .values(paused_at=None, paused_by=None, updated_at=now)
        .returning(IngestPipeline.id)
    ).first()
    _wake(session)
    return changed is not None


RESET = "default"  # a control set to this goes back to its setting


def configure(
    session: Session,
    now: dt.datetime,
    *,
    batch_size: int | str | None = None,
    rate_per_minute: int | str | None = None,
    concurrency: dict[str, int | str] | None = None,
) -> dict[str, Any]:
    """Change the live controls; ``RESET`` puts one back to its setting. The controls as
    they now are."""
    _row(session)
    values: dict[str, Any] = {"updated_at": now}
    for name, value in (("batch_size", batch_size), ("rate_per_minute", rate_per_minute)):
        if value is None:
            continue
        if value == RESET:
            values[name] = None
        elif isinstance(value, int) and value >= 1:
            values[name] = value
        else:
            raise ControlError(f"{name}: must be a number of at least 1, or {RESET!r}")
    if concurrency:
        current = dict(session.scalar(text("SELECT step_concurrency FROM ingest_pipeline")) or {})
        for step, limit in concurrency.items():
            if step not in INGEST_STEPS:
                raise ControlError(
                    f"concurrency: no step {step!r}; the steps are {', '.join(INGEST_STEPS)}"
                )
            if limit == RESET:
                current.pop(step, None)
            elif isinstance(limit, int) and limit >= 1:
                current[step] = limit
            else:
                raise ControlError(f"concurrency {step}: must be at least 1, or {RESET!r}")
        values["step_concurrency"] = current
    session.execute(update(IngestPipeline).where(IngestPipeline.id == 1).values(**values))
    _wake(session)
    return controls(session)


def controls(session: Session) -> dict[str, Any]:
    row = session.execute(SQL["controls"]).first()
    if row is None:
        return {
            "paused_at": None,
            "paused_by": None,
            "batch_size": None,
            "rate_per_minute": None,
            "step_concurrency": {},
        }
    return dict(row._mapping)


def effective(session: Session, settings: Settings) -> dict[str, Any]:
    """What the pipeline runs with: each live control, else its setting."""
    live = controls(session)
    return {
        "paused": live["paused_at"] is not None,
        "paused_at": live["paused_at"],
        "paused_by": live["paused_by"],
        "batch_size": live["batch_size"] or settings.ingest_batch_size,
        "rate_per_minute": live["rate_per_minute"] or settings.ingest_rate_per_minute or None,
        "step_concurrency": {**settings.step_concurrency, **(live["step_concurrency"] or {})},
    }


def retry_failed(session: Session, ids: list[int] | None = None) -> list[int]:
    """Failed jobs (all, or those of ``ids``) back to the queue, resuming at the step that
    failed with a fresh budget of attempts; the ids requeued."""
    requeued = [row.id for row in session.execute(SQL["retry_failed"], {"ids": ids})]
    return requeued


def clear_failed(session: Session, ids: list[int] | None = None) -> list[int]:
    """Delete failed jobs (all, or those of ``ids``); their uploads stay in the bucket."""
    return [row.id for row in session.execute(SQL["clear_failed"], {"ids": ids})]


def retry_job(session: Session, job_id: int) -> dict[str, Any]:
    """One failed job back to the queue (``automation retry ingest ID``). Raises
    ``LookupError`` for an unknown job and ``ValueError`` for one that is not failed."""
    job = session.get(IngestJob, job_id, with_for_update=True)
    if job is None:
        raise LookupError(f"no ingest job {job_id}")
    if job.status != "failed":
        raise ValueError(f"ingest job {job_id} is {job.status}, not failed: nothing to retry")
    retry_failed(session, [job_id])
    return {"kind": "ingest", "id": job_id, "status": "queued", "resumes_at": job.step}


@dataclass(frozen=True)
class Statistics:
    """The pipeline at a glance, as the spec's job page has it."""

    now: dt.datetime
    paused: bool
    paused_at: dt.datetime | None
    paused_by: str | None
    counts: dict[str, int]  # queued, processing, done, failed (all time)
    done_last_hour: int
    failed_last_hour: int
    queued_last_hour: int  # created in the last hour and still queued
    jobs_per_minute: float  # finished (done or failed) per minute over the last hour
    median_seconds_last_hour: float | None  # start to done
    oldest_queued: dict[str, Any] | None
    per_hour: list[dict[str, Any]] = field(default_factory=list)
    controls: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return value.isoformat() if isinstance(value, dt.datetime) else value

        return {
            key: (
                [{k: plain(v) for k, v in hour.items()} for hour in value]
                if key == "per_hour"
                else {k: plain(v) for k, v in value.items()}
                if isinstance(value, dict)
                else plain(value)
            )
            for key, value in self.__dict__.items()
        }


def statistics(
    session: Session, now: dt.datetime, settings: Settings, *, hours: int = 24
) -> Statistics:
    counts = {status: 0 for status in ("queued", "processing", "done", "failed")}
    counts.update({row.status: int(row.n) for row in session.execute(SQL["state_counts"])})
    hour = session.execute(SQL["last_hour"], {"since": now - HOUR}).one()
    oldest = session.execute(SQL["oldest_queued"]).first()
    live = effective(session, settings)
    per_hour = [
        {
            "hour": row.hour,
            "done": int(row.done),
            "failed": int(row.failed),
            "mean_seconds": None if row.mean_seconds is None else round(float(row.mean_seconds), 2),
        }
        for row in session.execute(SQL["per_hour"], {"now": now, "hours": hours})
    ]
    return Statistics(
        now=now,
        paused=live["paused"],
        paused_at=live["paused_at"],
        paused_by=live["paused_by"],
        counts=counts,
        done_last_hour=int(hour.done),
        failed_last_hour=int(hour.failed),
        queued_last_hour=int(hour.queued),
        jobs_per_minute=round((int(hour.done) + int(hour.failed)) / 60, 2),
        median_seconds_last_hour=(
            None if hour.median_seconds is None else round(float(hour.median_seconds), 2)
        ),
        oldest_queued=(
            None
            if oldest is None
            else {
                "id": oldest.id,
                "created_at": oldest.created_at,
                "object_path": oldest.object_path,
                "waiting_seconds": round((now - oldest.created_at).total_seconds()),
            }
        ),
        per_hour=per_hour,
        controls={k: v for k, v in live.items() if k not in ("paused", "paused_at", "paused_by")},
    )


def queued_longer_than(session: Session, now: dt.datetime, age: dt.timedelta) -> int:
    """Jobs queued for longer than ``age``: the stuck alert's count."""
    return int(session.scalar(SQL["queued_before"], {"before": now - age}) or 0)


# Jobs one at a time and a page at a time, for the API, the CLI and the status page.

JOB_FIELDS = (
    "id",
    "user_id",
    "object_path",
    "cover_path",
    "kind",
    "status",
    "step",
    "attempts",
    "max_attempts",
    "error",
    "track_id",
    "submitted_via",
    "created_at",
    "started_at",
    "finished_at",
)


def _job(job: IngestJob) -> dict[str, Any]:
    values = {name: getattr(job, name) for name in JOB_FIELDS}
    return {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in values.items()}


def parse_limit(name: str, raw: str) -> int | str:
    """An operator's value for a control: a whole number of at least 1, or ``RESET``."""
    value = raw.strip().lower()
    if value == RESET:
        return RESET
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ControlError(f"{name}: {raw!r} is not a number of at least 1, nor {RESET!r}")


def parse_concurrency(pairs: Iterable[str]) -> dict[str, int | str]:
    """``STEP=N`` or ``STEP=default`` pairs as ``configure`` takes them; the step names are
    checked there, against the steps that exist."""
    limits: dict[str, int | str] = {}
    for pair in pairs:
        step, sep, raw = pair.partition("=")
        if not sep or not step.strip():
            raise ControlError(f"concurrency: {pair!r} is not STEP=N (or STEP={RESET})")
        limits[step.strip()] = parse_limit(f"concurrency {step.strip()}", raw)
    return limits


def summary(session: Session, now: dt.datetime, settings: Settings) -> dict[str, Any]:
    """The ingest section of ``automation status``: the statistics without the per-hour
    table (``automation ingest status`` has it)."""
    report = statistics(session, now, settings, hours=1).as_json()
    del report["per_hour"], report["now"]
    return report


def job_statuses(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """The status of each of ``ids`` that exists."""
    rows = session.execute(select(IngestJob.id, IngestJob.status).where(IngestJob.id.in_(ids)))
    return {int(job_id): status for job_id, status in rows}


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    before: int | None = None,
    limit: int | None = 50,
    user_id: int | None = None,
) -> list[dict[str, Any]]:
    """Jobs newest first (by id, which only grows: ``before``, the last id of a page, gives
    the next one without shifting or repeating), optionally of one status or user;
    ``limit`` None: all of them."""
    query = select(IngestJob).order_by(IngestJob.id.desc()).limit(limit)
    if status is not None:
        query = query.where(IngestJob.status == status)
    if before is not None:
        query = query.where(IngestJob.id < before)
    if user_id is not None:
        query = query.where(IngestJob.user_id == user_id)
    return [_job(job) for job in session.scalars(query)]


def describe_job(session: Session, job_id: int) -> dict[str, Any]:
    """One job as an operator reads it: its fields, how long it waited and took, what each
    finished step recorded (``outputs``, the waveform's peaks counted rather than listed:
    the waveform PNG is their picture) and a short summary of each (``steps``).
    ``LookupError`` for an unknown id."""
    job = session.get(IngestJob, job_id)
    if job is None:
        raise LookupError(f"no ingest job {job_id}")
    outputs = dict(job.outputs or {})
    analysis = outputs.get("analysis")
    if isinstance(analysis, dict) and "peaks" in analysis:
        outputs["analysis"] = {
            **{k: v for k, v in analysis.items() if k != "peaks"},
            "peak_columns": len(analysis["peaks"] or []),
        }
    raw = job.outputs or {}
    return {
        **_job(job),
        "run_after": _iso(job.run_after),
        "worker_host": job.worker_host,
        "waited_seconds": _seconds(job.created_at, job.started_at),
        "took_seconds": _seconds(job.started_at, job.finished_at),
        "outputs": outputs,
        "steps": [
            {
                "step": step,
                "attempt": raw[step].get("attempt"),
                "summary": step_summary(step, raw[step]),
            }
            for step in (*INGEST_STEPS, *sorted(set(raw) - set(INGEST_STEPS)))
            if isinstance(raw.get(step), dict)
        ],
    }


def step_summary(step: str, output: dict[str, Any]) -> dict[str, Any]:
    """What a step found or made, in a few plain values: never the waveform's peaks, which
    are a number per column."""
    if step == "probe":
        keys = (
            ("format", "duration_seconds", "channels", "sample_rate", "title", "artist")
            if output.get("kind") == "audio"
            else ("format", "width", "height")
        )
        return {"kind": output.get("kind"), **{key: output.get(key) for key in keys}}
    if step == "analysis":
        features = output.get("features") or {}
        return {
            **{
                key: features.get(key)
                for key in ("tempo", "key", "mode", "mood", "energy", "duration_seconds")
            },
            "peaks": len(output.get("peaks") or []),
        }
    if step == "images":
        cover = output.get("cover") or {}
        return {
            "cover": cover.get("source"),
            "thumbnails": sorted(int(size) for size in output.get("thumbnails") or {}),
            "waveform": (output.get("waveform") or {}).get("path"),
            "card": (output.get("card") or {}).get("path"),
        }
    # publish, and any step added later: its plain values.
    return {
        key: value
        for key, value in output.items()
        if key != "attempt" and not isinstance(value, (dict, list))
    }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 2)
