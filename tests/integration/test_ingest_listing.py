"""Ingest jobs read back a page or one at a time (``control.list_jobs`` and
``describe_job``), as the API and the CLI show them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from db.models import IngestJob
from tasks.ingest import control
from tests import factories

NOW = dt.datetime(2026, 11, 25, 12, 30, tzinfo=dt.UTC)


def add_job(session: Any, status: str = "queued", **fields: Any) -> int:
    job = IngestJob(object_path=f"uploads/x/{status}.wav", status=status, created_at=NOW, **fields)
    session.add(job)
    session.flush()
    return job.id


def test_jobs_are_listed_newest_first_a_page_at_a_time(session: Any) -> None:
    ids = [add_job(session) for _ in range(5)]

    first = control.list_jobs(session, limit=2)
    second = control.list_jobs(session, limit=2, before=first[-1]["id"])

    assert [j["id"] for j in first] == [ids[4], ids[3]]
    assert [j["id"] for j in second] == [ids[2], ids[1]]


def test_the_listing_filters_by_status_and_by_user(session: Any) -> None:
    mine = factories.user(session).id
    add_job(session, "failed")
    wanted = add_job(session, "failed", user_id=mine)
    add_job(session, "done", user_id=mine)

    assert [j["id"] for j in control.list_jobs(session, status="failed", user_id=mine)] == [wanted]


def test_a_listed_job_is_plain_json_with_its_times_as_iso_strings(session: Any) -> None:
    add_job(session, "failed", error="not audio", step="probe", finished_at=NOW)

    [job] = control.list_jobs(session)

    assert json.loads(json.dumps(job)) == job
    assert job["created_at"] == NOW.isoformat()
    assert (job["status"], job["step"], job["error"]) == ("failed", "probe", "not audio")


def test_a_described_job_counts_its_waveform_peaks_instead_of_listing_them(session: Any) -> None:
    job_id = add_job(
        session,
        "processing",
        step="images",
        outputs={
            "probe": {"kind": "audio"},
            "analysis": {"features": {"tempo": 120.0}, "peaks": [0.1] * 1800},
        },
    )

    described = control.describe_job(session, job_id)

    assert described["outputs"]["analysis"] == {"features": {"tempo": 120.0}, "peak_columns": 1800}
    assert described["outputs"]["probe"] == {"kind": "audio"}


def test_describing_an_unknown_job_is_a_lookup_error(session: Any) -> None:
    with pytest.raises(LookupError, match="no ingest job 999999"):
        control.describe_job(session, 999_999)
