"""The status page in a real browser: an admin signs in, reads the status, pauses and
resumes a schedule entry, and runs a task and watches it finish on the real worker."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from console import accounts
from db.models import ScheduleEntry
from tests.support import serve_console, wait_for
from worker.schedules.store import set_entry
from worker.schedules.timing import Timing

pytestmark = pytest.mark.committed  # the console opens its own sessions
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def console_url() -> Iterator[str]:
    with serve_console() as url:
        yield url


@pytest.fixture
def admin(session: Any) -> str:
    accounts.create_admin(session, "ada", "admin")
    accounts.set_password(session, "ada", PASSWORD)
    session.commit()
    return "ada"


def sign_in(page: Any, console_url: str, name: str) -> None:
    page.goto(f"{console_url}/console")  # not signed in: sent to the form
    expect(page).to_have_url(f"{console_url}/console/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{console_url}/console")


def test_an_admin_signs_in_and_sees_the_status(page: Any, console_url: str, admin: str) -> None:
    sign_in(page, console_url, admin)

    expect(page.get_by_role("heading", name="Automation status")).to_be_visible()
    for section in ("Workers and queues", "Background tasks", "Enrichment", "Schedule"):
        expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Flower")).to_be_visible()
    expect(page.get_by_text("ada (admin)")).to_be_visible()


def test_a_wrong_password_shows_an_error_on_the_form(
    page: Any, console_url: str, admin: str
) -> None:
    page.goto(f"{console_url}/console/login")
    page.get_by_label("Name").fill(admin)
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")


def test_an_admin_pauses_and_resumes_a_schedule_entry(
    page: Any, console_url: str, admin: str, session: Any
) -> None:
    set_entry(
        session,
        "nightly-trending",
        "trending.calculate",
        Timing(cron="0 3 * * *"),
        "test",
        dt.datetime.now(dt.UTC),
        known_tasks={"trending.calculate"},
    )
    session.commit()
    sign_in(page, console_url, admin)
    row = page.locator('tr[data-entry="nightly-trending"]')

    row.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_have_text("nightly-trending: paused.")
    expect(row.locator("td.next")).to_have_text("PAUSED")
    session.expire_all()
    assert session.get(ScheduleEntry, "nightly-trending").paused

    row.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_have_text("nightly-trending: resumed.")
    expect(row.locator("td.next")).not_to_have_text("PAUSED")
    session.expire_all()
    entry = session.get(ScheduleEntry, "nightly-trending")
    assert not entry.paused
    assert entry.updated_by == admin


def test_a_triggered_task_is_seen_finishing_on_the_page(
    page: Any, console_url: str, admin: str, celery_worker: Any
) -> None:
    sign_in(page, console_url, admin)

    page.locator("#trigger").get_by_role("button", name="ping", exact=True).click()
    flash = page.get_by_role("status")
    expect(flash).to_contain_text("Sent automation.ping")
    task_id = re.search(r"\(([0-9a-f-]{36})\)", flash.inner_text())
    assert task_id, flash.inner_text()
    run = page.locator(f'#runs tr[data-task-id="{task_id.group(1)}"] td.status')

    def finished() -> bool:
        # The worker runs it; the drainer journals it into task_runs; a reload shows it.
        page.reload()
        return run.count() == 1 and run.inner_text() == "success"

    wait_for(finished, timeout=30, interval=0.5)
    expect(run).to_have_text("success")
