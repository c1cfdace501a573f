"""Operating the ingest pipeline: pause and resume, live controls, retrying and clearing
failed jobs, and the statistics the CLI, the API and the alert read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from db.models import IngestJob
from tasks.ingest import control
from worker.settings import get_settings

NOW = dt.datetime(2026, 11, 25, 12, 30, tzinfo=dt.UTC)


def add_job(session: Any, status: str, *, created: dt.datetime = NOW, **fields: Any) -> int:
    job = IngestJob(
        object_path=f"uploads/{status}.wav", status=status, created_at=created, **fields
    )
    session.add(job)
    session.flush()
    return job.id


def test_pausing_twice_keeps_the_first_pause_and_resume_clears_it(session: Any) -> None:
    assert control.pause(session, "ops", NOW) is True
    assert control.pause(session, "someone else", NOW + dt.timedelta(minutes=1)) is False
    live = control.controls(session)
    assert (live["paused_at"], live["paused_by"]) == (NOW, "ops")

    assert control.resume(session, NOW) is True
    assert control.resume(session, NOW) is False
    assert control.controls(session)["paused_at"] is None


def test_live_controls_override_the_settings_until_reset(session: Any) -> None:
    settings = get_settings().model_copy(
        update={"ingest_batch_size": 8, "ingest_step_concurrency": "images=4"}
    )

    control.configure(session, NOW, batch_size=3, concurrency={"analysis": 2})
    live = control.effective(session, settings)
    assert live["batch_size"] == 3
    assert live["step_concurrency"] == {"images": 4, "analysis": 2}

    control.configure(
        session, NOW, batch_size=control.RESET, concurrency={"analysis": control.RESET}
    )
    live = control.effective(session, settings)
    assert live["batch_size"] == 8
    assert live["step_concurrency"] == {"images": 4}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size: must be a number of at least 1"),
        ({"concurrency": {"thumbnails": 2}}, "no step 'thumbnails'; the steps are probe, analysis"),
        ({"concurrency": {"images": 0}}, "concurrency images: must be at least 1"),
    ],
)
def test_a_control_that_cannot_be_is_refused_naming_it(
    session: Any, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(control.ControlError, match=message):
        control.configure(session, NOW, **changes)


def test_retry_failed_requeues_with_fresh_attempts_and_keeps_finished_steps(session: Any) -> None:
    failed = add_job(
        session,
        "failed",
        attempts=5,
        error="gave up",
        step="images",
        outputs={"probe": {"kind": "audio"}, "analysis": {"peaks": []}},
    )
    done = add_job(session, "done")

    assert control.retry_failed(session) == [failed]

    session.expire_all()
    job = session.get(IngestJob, failed)
    assert (job.status, job.attempts, job.enqueued_at) == ("queued", 0, None)
    assert set(job.outputs) == {"probe", "analysis"}
    assert session.get(IngestJob, done).status == "done"


def test_retrying_a_job_that_is_not_failed_says_so(session: Any) -> None:
    queued = add_job(session, "queued")
    with pytest.raises(ValueError, match=f"ingest job {queued} is queued, not failed"):
        control.retry_job(session, queued)
    with pytest.raises(LookupError, match="no ingest job 999"):
        control.retry_job(session, 999)


def test_clear_failed_deletes_only_failed_jobs(session: Any) -> None:
    failed = add_job(session, "failed")
    kept = [add_job(session, status) for status in ("queued", "processing", "done")]

    assert control.clear_failed(session) == [failed]
    assert sorted(session.scalars(text("SELECT id FROM ingest_jobs"))) == kept


def test_statistics_count_the_last_hour_and_find_the_oldest_queued_job(session: Any) -> None:
    settings = get_settings()
    old = add_job(session, "queued", created=NOW - dt.timedelta(hours=3))
    add_job(session, "queued", created=NOW - dt.timedelta(minutes=5))
    for minutes in (10, 20, 30):
        add_job(
            session,
            "done",
            started_at=NOW - dt.timedelta(minutes=minutes, seconds=40),
            finished_at=NOW - dt.timedelta(minutes=minutes),
        )
    add_job(session, "failed", finished_at=NOW - dt.timedelta(minutes=15))
    add_job(
        session,
        "done",
        started_at=NOW - dt.timedelta(hours=5),
        finished_at=NOW - dt.timedelta(hours=4, minutes=59),
    )

    stats = control.statistics(session, NOW, settings, hours=6)

    assert stats.counts == {"queued": 2, "processing": 0, "done": 4, "failed": 1}
    assert (stats.done_last_hour, stats.failed_last_hour, stats.queued_last_hour) == (3, 1, 1)
    assert stats.jobs_per_minute == pytest.approx(4 / 60, abs=0.01)
    assert stats.median_seconds_last_hour == 40
    assert stats.oldest_queued is not None and stats.oldest_queued["id"] == old
    assert stats.oldest_queued["waiting_seconds"] == 3 * 3600
    # Hours 07:00 to 12:00: the job finished at 07:31 opens the window.
    assert [h["done"] for h in stats.per_hour] == [1, 0, 0, 0, 0, 3]
    assert control.queued_longer_than(session, NOW, dt.timedelta(hours=1)) == 1


def test_list_jobs_pages_newest_first_and_filters_by_status(session: Any) -> None:
    ids = [add_job(session, status) for status in ("failed", "done", "failed", "queued")]

    assert [job["id"] for job in control.list_jobs(session, limit=2)] == [ids[3], ids[2]]
    assert [job["id"] for job in control.list_jobs(session, limit=2, before=ids[2])] == [
        ids[1],
        ids[0],
    ]
    assert [job["id"] for job in control.list_jobs(session, status="failed", limit=None)] == [
        ids[2],
        ids[0],
    ]


def test_describe_job_times_the_job_and_summarises_each_finished_step(session: Any) -> None:
    job_id = add_job(
        session,
        "failed",
        created=NOW - dt.timedelta(seconds=30),
        started_at=NOW - dt.timedelta(seconds=20),
        finished_at=NOW,
        step="images",
        error="disk full",
        outputs={
            "analysis": {
                "features": {"tempo": 120.1, "key": "A"},
                "peaks": [0.1] * 900,
                "attempt": 2,
            },
            "probe": {"kind": "image", "format": "PNG", "width": 300, "height": 200, "attempt": 1},
        },
    )

    job = control.describe_job(session, job_id)

    assert job is not None
    assert (job["waited_seconds"], job["took_seconds"], job["error"]) == (10, 20, "disk full")
    # In the order the steps run, whatever the order they were stored in.
    assert job["steps"] == [
        {
            "step": "probe",
            "attempt": 1,
            "summary": {"kind": "image", "format": "PNG", "width": 300, "height": 200},
        },
        {
            "step": "analysis",
            "attempt": 2,
            "summary": {
                "tempo": 120.1,
                "key": "A",
                "mode": None,
                "mood": None,
                "energy": None,
                "duration_seconds": None,
                "peaks": 900,
            },
        },
    ]
    with pytest.raises(LookupError):
        control.describe_job(session, job_id + 1000)


def test_job_statuses_names_the_jobs_that_exist(session: Any) -> None:
    done = add_job(session, "done")

    assert control.job_statuses(session, [done, done + 1000]) == {done: "done"}
