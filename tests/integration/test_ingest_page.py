"""The status page's media ingest panel over real HTTP: what it shows, and an admin's
pause, resume and retry of failed jobs, each audited as the API's are."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.models import AdminAudit, IngestJob
from tasks.ingest import control
from tests.integration.test_pages import form_csrf, make_admin, page_csrf, sign_in
from tests.support import serve_console

pytestmark = pytest.mark.committed


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_console() as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


def add_job(session: Any, status: str, **fields: Any) -> int:
    job = IngestJob(object_path=f"uploads/x/{status}.wav", status=status, **fields)
    session.add(job)
    session.commit()
    return job.id


def audit_trail(session: Any) -> list[tuple[str, str, str]]:
    rows = session.execute(
        select(AdminAudit.actor, AdminAudit.action, AdminAudit.target)
        .where(AdminAudit.action.like("ingest.%"))
        .order_by(AdminAudit.id)
    ).all()
    return [tuple(row) for row in rows]


@pytest.mark.broker_independent
def test_the_panel_counts_jobs_per_state_and_names_the_oldest_waiting_one(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    now = dt.datetime.now(dt.UTC)
    oldest = add_job(session, "queued", created_at=now - dt.timedelta(hours=2, minutes=5))
    add_job(session, "queued")
    add_job(session, "processing")
    add_job(session, "done", started_at=now - dt.timedelta(seconds=30), finished_at=now)
    sign_in(client, "ada")

    page = client.get("/console").text

    for state, count in (("waiting", 2), ("active", 1), ("done", 1), ("failed", 0)):
        assert f'data-state="{state}">{count}</td>' in page
    assert f"Oldest waiting job: 2 h 05 min (job {oldest}, uploads/x/queued.wav)" in page
    assert "Last hour: 1 done, 0 failed, 1 queued and still waiting" in page
    hours = page.split('class="narrow per-hour"')[1].split("</table>")[0]
    assert hours.count("<tr><td>") == 12  # an hour a row, the last 12, newest first
    assert f'<tr><td>{now:%Y-%m-%d %H}:00</td><td class="n">1</td>' in hours


@pytest.mark.broker_independent
def test_the_panel_lists_failed_jobs_with_their_reasons(session: Any, client: httpx.Client) -> None:
    make_admin(session, "ada")
    failed = add_job(session, "failed", step="probe", error="not audio: a text file")
    sign_in(client, "ada")

    page = client.get("/console").text

    assert f'data-ingest-job="{failed}"' in page
    assert "not audio: a text file" in page


@pytest.mark.broker_independent
def test_an_admin_pauses_and_resumes_ingest_from_the_page_and_both_are_audited(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")

    pause = client.post("/console/ingest/pause", data={"csrf": page_csrf(client)})
    after_pause = client.get("/console").text
    session.expire_all()
    paused_by = control.controls(session)["paused_by"]
    resume = client.post("/console/ingest/resume", data={"csrf": page_csrf(client)})
    after_resume = client.get("/console").text

    assert (pause.status_code, pause.headers["location"]) == (303, "/console")
    assert "Ingest paused." in after_pause
    assert "<strong>PAUSED</strong> since" in after_pause and "by ada" in after_pause
    assert paused_by == "ada"
    assert resume.status_code == 303
    assert "Ingest resumed." in after_resume
    assert "Running." in after_resume
    assert audit_trail(session) == [
        ("ada", "ingest.pause", "ingest"),
        ("ada", "ingest.resume", "ingest"),
    ]


@pytest.mark.broker_independent
def test_retry_failed_from_the_page_puts_the_failed_jobs_back_in_the_queue(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    failed = add_job(session, "failed", attempts=5, error="gave up")
    sign_in(client, "ada")
    page = client.get("/console").text
    assert 'action="/console/ingest/retry-failed"' in page

    response = client.post("/console/ingest/retry-failed", data={"csrf": form_csrf(page)})

    assert response.status_code == 303
    assert "1 failed ingest job(s) queued again." in client.get("/console").text
    session.expire_all()
    job = session.get(IngestJob, failed)
    assert (job.status, job.attempts) == ("queued", 0)
    assert audit_trail(session) == [("ada", "ingest.retry_failed", "ingest")]


@pytest.mark.broker_independent
def test_a_viewer_sees_the_panel_without_its_buttons(session: Any, client: httpx.Client) -> None:
    make_admin(session, "vic", role="viewer")
    add_job(session, "failed")
    sign_in(client, "vic")

    page = client.get("/console").text

    assert "Media ingest" in page
    assert "/console/ingest/" not in page


@pytest.mark.broker_independent
def test_a_viewer_cannot_pause_ingest(session: Any, client: httpx.Client) -> None:
    make_admin(session, "vic", role="viewer")
    sign_in(client, "vic")

    response = client.post("/console/ingest/pause", data={"csrf": page_csrf(client)})

    assert response.status_code == 403
    session.expire_all()
    assert control.controls(session)["paused_at"] is None


@pytest.mark.broker_independent
def test_a_pause_without_the_csrf_token_is_refused_and_does_nothing(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")

    response = client.post("/console/ingest/pause", data={"csrf": "0" * 64})

    assert response.status_code == 403
    session.expire_all()
    assert control.controls(session)["paused_at"] is None
