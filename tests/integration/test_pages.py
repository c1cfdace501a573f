"""The status page over real HTTP (uvicorn in a thread, httpx): sign-in and its throttle,
the session cookie, CSRF, roles, and an admin's actions with their audit trail.

Every test is ``committed``: the console opens its own sessions, so the rows a test builds
must be committed for it to see them, and the tables are emptied afterwards.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from console import accounts, pages
from console.auth import SESSION_COOKIE
from db.models import (
    AdminAudit,
    AdminUser,
    BackgroundTask,
    ScheduleChange,
    ScheduleEntry,
    WorkflowExecution,
)
from tests import factories
from tests.integration.test_workflows import workflow
from tests.support import runs_of, serve_console, wait_for
from worker.schedules.store import set_entry
from worker.schedules.timing import Timing
from worker.settings import get_settings

pytestmark = pytest.mark.committed
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_console() as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


def make_admin(
    session: Any, name: str, role: str = "admin", password: str | None = PASSWORD
) -> None:
    accounts.create_admin(session, name, role)
    if password is not None:
        accounts.set_password(session, name, password)
    session.commit()


def make_entry(session: Any, name: str = "nightly-trending") -> None:
    set_entry(
        session,
        name,
        "trending.calculate",
        Timing(cron="0 3 * * *"),
        "test",
        dt.datetime.now(dt.UTC),
        known_tasks={"trending.calculate"},
    )
    session.commit()


def form_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: httpx.Client, name: str, password: str = PASSWORD) -> httpx.Response:
    csrf = form_csrf(client.get("/console/login").text)
    return client.post(
        "/console/login", data={"username": name, "password": password, "csrf": csrf}
    )


def page_csrf(client: httpx.Client) -> str:
    page = client.get("/console")
    assert page.status_code == 200, page.text
    return form_csrf(page.text)


def paused(session: Any, name: str = "nightly-trending") -> bool:
    session.expire_all()
    entry = session.get(ScheduleEntry, name)
    assert entry is not None
    return entry.paused


@pytest.mark.broker_independent
def test_an_admin_signs_in_and_sees_the_status_report(session: Any, client: httpx.Client) -> None:
    make_admin(session, "ada")

    response = sign_in(client, "ada")

    assert response.status_code == 303
    assert response.headers["location"] == "/console"
    page = client.get("/console")
    assert page.status_code == 200
    for heading in ("Workers and queues", "Background tasks", "Enrichment", "Schedule"):
        assert heading in page.text
    assert "Recent runs" in page.text


@pytest.mark.broker_independent
def test_the_session_cookie_is_http_only_and_same_site_strict(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")

    response = sign_in(client, "ada")

    cookie = next(
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith(SESSION_COOKIE + "=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    # Development (the tests' ENVIRONMENT) serves plain HTTP; production sets Secure.
    assert "Secure" not in cookie


@pytest.mark.broker_independent
def test_the_page_cannot_be_framed_by_another_site_nor_cached(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")

    page = client.get("/console")

    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.broker_independent
def test_a_signed_in_admin_opening_the_sign_in_form_is_sent_to_the_page(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")

    response = client.get("/console/login")

    assert (response.status_code, response.headers["location"]) == (303, "/console")


@pytest.mark.broker_independent
def test_a_wrong_password_is_refused_without_a_session(session: Any, client: httpx.Client) -> None:
    make_admin(session, "ada")

    response = sign_in(client, "ada", "not the password at all")

    assert response.status_code == 401
    assert "Wrong name or password" in response.text
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.broker_independent
def test_a_user_without_a_password_cannot_sign_in(session: Any, client: httpx.Client) -> None:
    make_admin(session, "tokens-only", password=None)

    response = sign_in(client, "tokens-only", "")

    assert response.status_code == 401
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.broker_independent
def test_sign_in_is_locked_after_too_many_failures_even_with_the_right_password(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    for _ in range(get_settings().api_login_max_failures):
        assert sign_in(client, "ada", "a wrong guess here").status_code == 401

    response = sign_in(client, "ada")

    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.text
    assert int(response.headers["retry-after"]) > 0
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.broker_independent
def test_the_sign_in_form_without_its_csrf_token_is_refused(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    client.get("/console/login")  # the double-submit cookie is there, the field is not

    response = client.post("/console/login", data={"username": "ada", "password": PASSWORD})

    assert response.status_code == 403
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.broker_independent
def test_the_sign_in_form_without_its_cookie_is_refused(session: Any, base_url: str) -> None:
    make_admin(session, "ada")
    with httpx.Client(base_url=base_url) as first:
        csrf = form_csrf(first.get("/console/login").text)

    # As a page on another site would post it: a token, but not the browser's cookie.
    response = httpx.post(
        f"{base_url}/console/login", data={"username": "ada", "password": PASSWORD, "csrf": csrf}
    )

    assert response.status_code == 403
    assert SESSION_COOKIE not in response.cookies


@pytest.mark.parametrize("csrf", [None, "0" * 64], ids=["missing", "wrong"])
@pytest.mark.broker_independent
def test_an_action_with_a_missing_or_wrong_csrf_token_is_refused_and_does_nothing(
    session: Any, client: httpx.Client, csrf: str | None
) -> None:
    make_admin(session, "ada")
    make_entry(session)
    sign_in(client, "ada")

    response = client.post(
        "/console/schedule/nightly-trending/pause", data={} if csrf is None else {"csrf": csrf}
    )

    assert response.status_code == 403
    assert not paused(session)


@pytest.mark.broker_independent
def test_a_viewer_sees_the_page_without_buttons(session: Any, client: httpx.Client) -> None:
    make_admin(session, "val", role="viewer")
    make_entry(session)
    sign_in(client, "val")

    page = client.get("/console")

    assert page.status_code == 200
    assert "nightly-trending" in page.text
    assert "/console/schedule/" not in page.text
    assert "/console/trigger" not in page.text


@pytest.mark.broker_independent
def test_a_viewer_cannot_post_an_action(session: Any, client: httpx.Client) -> None:
    make_admin(session, "val", role="viewer")
    make_entry(session)
    sign_in(client, "val")
    csrf = page_csrf(client)  # the sign-out form's: a valid token for this session

    response = client.post("/console/schedule/nightly-trending/pause", data={"csrf": csrf})

    assert response.status_code == 403
    assert not paused(session)


@pytest.mark.broker_independent
def test_a_session_revoked_mid_way_is_sent_back_to_sign_in(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    make_entry(session)
    sign_in(client, "ada")
    csrf = page_csrf(client)

    accounts.revoke_all(session, "ada", dt.datetime.now(dt.UTC))
    session.commit()
    page = client.get("/console")
    action = client.post("/console/schedule/nightly-trending/pause", data={"csrf": csrf})

    assert (page.status_code, page.headers["location"]) == (303, "/console/login")
    assert (action.status_code, action.headers["location"]) == (303, "/console/login")
    assert not paused(session)


@pytest.mark.broker_independent
def test_a_disabled_user_is_sent_back_to_sign_in(session: Any, client: httpx.Client) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")

    accounts.disable_admin(session, "ada", dt.datetime.now(dt.UTC))
    session.commit()
    page = client.get("/console")

    assert (page.status_code, page.headers["location"]) == (303, "/console/login")


@pytest.mark.broker_independent
def test_an_expired_session_is_sent_back_to_sign_in(session: Any, base_url: str) -> None:
    make_admin(session, "ada")
    admin = session.scalar(select(AdminUser).where(AdminUser.username == "ada"))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    token = accounts.open_session(session, admin, long_ago, hours=12)
    session.commit()

    page = httpx.get(f"{base_url}/console", cookies={SESSION_COOKIE: token})

    assert (page.status_code, page.headers["location"]) == (303, "/console/login")


@pytest.mark.broker_independent
def test_an_api_token_in_the_session_cookie_is_refused(session: Any, base_url: str) -> None:
    make_admin(session, "ada")
    token, _ = accounts.issue_token(session, "ada")
    session.commit()

    page = httpx.get(f"{base_url}/console", cookies={SESSION_COOKIE: token})

    assert (page.status_code, page.headers["location"]) == (303, "/console/login")


@pytest.mark.broker_independent
def test_signing_out_revokes_the_session(session: Any, client: httpx.Client) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")
    token = client.cookies[SESSION_COOKIE]
    csrf = page_csrf(client)

    response = client.post("/console/logout", data={"csrf": csrf})

    assert (response.status_code, response.headers["location"]) == (303, "/console/login")
    # The old cookie, replayed, no longer works: the session row itself is revoked.
    replayed = httpx.get(f"{client.base_url}/console", cookies={SESSION_COOKIE: token})
    assert replayed.status_code == 303
    assert accounts.authenticate(session, token, dt.datetime.now(dt.UTC)) is None


@pytest.mark.broker_independent
def test_signing_in_again_ends_the_session_the_browser_had(session: Any, base_url: str) -> None:
    make_admin(session, "ada")
    with httpx.Client(base_url=base_url, timeout=10) as first:
        sign_in(first, "ada")
        old = first.cookies[SESSION_COOKIE]
    with httpx.Client(base_url=base_url, timeout=10) as browser:
        csrf = form_csrf(browser.get("/console/login").text)
        browser.cookies.set(SESSION_COOKIE, old, path="/console")

        signed = browser.post(
            "/console/login", data={"username": "ada", "password": PASSWORD, "csrf": csrf}
        )

        assert signed.cookies[SESSION_COOKIE] != old
    assert accounts.authenticate(session, old, dt.datetime.now(dt.UTC)) is None


@pytest.mark.broker_independent
def test_pausing_and_resuming_an_entry_is_done_as_the_admin_and_audited(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    make_entry(session)
    sign_in(client, "ada")

    pause = client.post(
        "/console/schedule/nightly-trending/pause", data={"csrf": page_csrf(client)}
    )
    after_pause = client.get("/console")
    assert paused(session)
    resume = client.post(
        "/console/schedule/nightly-trending/resume", data={"csrf": page_csrf(client)}
    )

    assert (pause.status_code, pause.headers["location"]) == (303, "/console")
    assert "nightly-trending: paused." in after_pause.text
    assert resume.status_code == 303
    assert not paused(session)
    changes = session.execute(
        select(ScheduleChange.actor, ScheduleChange.action)
        .where(ScheduleChange.entry == "nightly-trending", ScheduleChange.actor == "ada")
        .order_by(ScheduleChange.id)
    ).all()
    assert [tuple(change) for change in changes] == [("ada", "pause"), ("ada", "resume")]
    audit = session.execute(
        select(AdminAudit.actor, AdminAudit.action, AdminAudit.target, AdminAudit.remote)
        .where(AdminAudit.action.like("schedule.%"))
        .order_by(AdminAudit.id)
    ).all()
    assert [tuple(row) for row in audit] == [
        ("ada", "schedule.pause", "nightly-trending", "127.0.0.1"),
        ("ada", "schedule.resume", "nightly-trending", "127.0.0.1"),
    ]


@pytest.mark.broker_independent
def test_retrying_a_failed_ledger_row_puts_it_back_to_pending(
    session: Any, client: httpx.Client
) -> None:
    make_admin(session, "ada")
    track = factories.track(session, factories.artist(session))
    row = BackgroundTask(
        task_type="mood_detection",
        track_id=track.id,
        status="failed",
        attempts=3,
        error_message="decoder gave up",
        completed_at=dt.datetime.now(dt.UTC),
    )
    session.add(row)
    session.commit()
    sign_in(client, "ada")
    page = client.get("/console")
    assert f'data-ledger-row="{row.id}"' in page.text

    response = client.post(f"/console/retry/ledger/{row.id}", data={"csrf": form_csrf(page.text)})

    assert response.status_code == 303
    session.expire_all()
    assert (row.status, row.attempts) == ("pending", 0)
    assert (
        session.scalar(
            select(AdminAudit.target).where(AdminAudit.action == "retry", AdminAudit.actor == "ada")
        )
        == f"ledger:{row.id}"
    )


def test_triggering_a_task_sends_it_to_the_worker_and_records_who(
    session: Any, client: httpx.Client, celery_worker: Any
) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")

    response = client.post("/console/trigger", data={"task": "ping", "csrf": page_csrf(client)})

    assert response.status_code == 303
    flash = re.search(r"Sent automation.ping \(([0-9a-f-]{36})\)", client.get("/console").text)
    assert flash, "no flash naming the task sent"
    runs = wait_for(lambda: [r for r in runs_of(session, flash.group(1)) if r.status == "success"])
    assert runs[0].task_name == "automation.ping"
    assert (
        session.scalar(
            select(AdminAudit.actor).where(
                AdminAudit.action == "trigger", AdminAudit.target == "ping"
            )
        )
        == "ada"
    )


@pytest.mark.broker_independent
def test_an_unknown_trigger_is_refused_on_the_page(session: Any, client: httpx.Client) -> None:
    make_admin(session, "ada")
    sign_in(client, "ada")

    client.post("/console/trigger", data={"task": "rm -rf", "csrf": page_csrf(client)})

    assert "Unknown task" in client.get("/console").text


def failed_execution(session: Any, app: Any) -> WorkflowExecution:
    owner = factories.user(session)
    workflow_id = workflow(session, app, name="tell <the> importer")
    job = factories.upload(session, owner.id)
    row = factories.execution(
        session,
        workflow_id,
        "failed",
        dt.datetime.now(dt.UTC),
        job_id=job.id,
        attempts=5,
        error="503 from the receiver",
    )
    session.commit()
    return row


def report_with(monkeypatch: pytest.MonkeyPatch, section: dict[str, Any] | None) -> None:
    """The status report the page shows, its workflows section replaced (None: removed)."""
    collect = pages.collect_status

    def collect_status(*args: Any, **kwargs: Any) -> dict[str, Any]:
        report = collect(*args, **kwargs)
        report.pop("workflows", None)
        return report if section is None else report | {"workflows": section}

    monkeypatch.setattr(pages, "collect_status", collect_status)


@pytest.mark.broker_independent
def test_the_workflows_panel_shows_the_report_s_workflows_section(
    session: Any, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    report_with(
        monkeypatch,
        {
            "executions_24h": {"completed": 7, "failed": 2},
            "oldest_pending": "2026-11-25T11:58:00+00:00",
            "oldest_pending_age_seconds": 120.4,
            "unmatched_changes": 3,
            "oldest_unmatched": "2026-11-25T11:59:00+00:00",
            "workflows": {"active": 4, "inactive": 1},
        },
    )
    make_admin(session, "ada")
    sign_in(client, "ada")

    page = client.get("/console").text

    assert "4 active, 1 inactive" in page
    assert "Executions in 24 h: completed 7, failed 2." in page
    assert "Oldest pending execution: 120 s (2026-11-25T11:58:00+00:00)" in page
    assert "Status changes not yet matched: 3, oldest 2026-11-25T11:59:00+00:00" in page


@pytest.mark.broker_independent
def test_the_page_renders_without_a_workflows_section_in_the_report(
    session: Any, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    report_with(monkeypatch, None)
    make_admin(session, "ada")
    sign_in(client, "ada")

    page = client.get("/console")

    assert page.status_code == 200
    assert "Not in this status report." in page.text


@pytest.mark.broker_independent
def test_the_page_renders_a_workflows_section_missing_its_parts(
    session: Any, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    report_with(monkeypatch, {"unmatched_changes": 0})
    make_admin(session, "ada")
    sign_in(client, "ada")

    page = client.get("/console")

    assert page.status_code == 200
    assert "? active, ? inactive" in page.text


@pytest.mark.broker_independent
def test_a_viewer_sees_failed_workflow_executions_without_a_retry_button(
    session: Any, client: httpx.Client, app: Any
) -> None:
    row = failed_execution(session, app)
    make_admin(session, "val", role="viewer")
    sign_in(client, "val")

    page = client.get("/console").text

    assert f'data-workflow-execution="{row.id}"' in page
    assert "tell &lt;the&gt; importer" in page  # a listener may name it: escaped
    assert "/console/retry/workflow/" not in page


@pytest.mark.broker_independent
def test_retrying_a_failed_workflow_execution_puts_it_back_to_pending(
    session: Any, client: httpx.Client, app: Any
) -> None:
    row = failed_execution(session, app)
    make_admin(session, "ada")
    sign_in(client, "ada")
    page = client.get("/console")
    assert f'action="/console/retry/workflow/{row.id}"' in page.text

    response = client.post(f"/console/retry/workflow/{row.id}", data={"csrf": page_csrf(client)})

    assert (response.status_code, response.headers["location"]) == (303, "/console")
    assert f"Workflow execution {row.id} (workflow {row.workflow_id}): pending again." in (
        client.get("/console").text
    )
    session.expire_all()
    assert (row.status, row.attempts) == ("pending", 0)
    assert session.execute(
        select(AdminAudit.actor, AdminAudit.target).where(AdminAudit.action == "retry")
    ).all() == [("ada", f"workflow:{row.id}")]


@pytest.mark.broker_independent
def test_retrying_a_workflow_execution_that_has_not_failed_says_why_and_changes_nothing(
    session: Any, client: httpx.Client, app: Any
) -> None:
    row = failed_execution(session, app)
    row.status = "completed"
    session.commit()
    make_admin(session, "ada")
    sign_in(client, "ada")

    client.post(f"/console/retry/workflow/{row.id}", data={"csrf": page_csrf(client)})

    assert "is completed, not failed: nothing to retry" in client.get("/console").text
    session.expire_all()
    assert row.status == "completed"


@pytest.mark.broker_independent
def test_a_viewer_cannot_retry_a_workflow_execution(
    session: Any, client: httpx.Client, app: Any
) -> None:
    row = failed_execution(session, app)
    make_admin(session, "val", role="viewer")
    sign_in(client, "val")

    response = client.post(f"/console/retry/workflow/{row.id}", data={"csrf": page_csrf(client)})

    assert response.status_code == 403
    session.expire_all()
    assert row.status == "failed"
