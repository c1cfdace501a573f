"""The browser tier: the status page in a real Chromium (Debian's package, driven by
Playwright's Python package), against real PostgreSQL, Redis and the in-process worker.

Playwright's own browser download does not work here, so the tests launch the system's
``chromium`` (``.ci/run`` installs it) and skip, saying so, only where none is installed.
One browser per module: starting Chromium costs about a second, a new context (a fresh
cookie jar) a few milliseconds.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

# Without the background-networking flags Chromium reaches out to Google's services at
# start, which a closed network refuses (and CI need not wait for).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    # Registered once however many tiers ask for it, so the services start once a run.
    config.pluginmanager.import_plugin("tests.services")


@pytest.fixture(autouse=True)
def _isolated(request: pytest.FixtureRequest, engine: Engine) -> Iterator[None]:
    from tests.services import isolate

    yield from isolate(request, engine)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page in a context of its own: no cookie of another test."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()
