"""The status page's media ingest panel in a real browser: an admin pauses ingest and the
panel says so, then resumes it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from console import accounts
from tasks.ingest import control
from tests.browser.test_status_page import PASSWORD, sign_in
from tests.support import serve_console

pytestmark = pytest.mark.committed  # the console opens its own sessions


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


def test_an_admin_pauses_ingest_sees_it_paused_then_resumes_it(
    page: Any, console_url: str, admin: str, session: Any
) -> None:
    sign_in(page, console_url, admin)
    panel = page.locator("#ingest")
    expect(panel.locator("p.state")).to_have_text("Running.")

    panel.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_have_text("Ingest paused.")
    expect(panel.locator("p.state")).to_contain_text("PAUSED since")
    expect(panel.locator("p.state")).to_contain_text("by ada")
    session.expire_all()
    assert control.controls(session)["paused_by"] == "ada"

    panel.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_have_text("Ingest resumed.")
    expect(panel.locator("p.state")).to_have_text("Running.")
    session.expire_all()
    assert control.controls(session)["paused_at"] is None
