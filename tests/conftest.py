"""What every tier shares, none of it a service: a scratch directory and a clean environment.

The tiers:

- ``tests/unit``: no PostgreSQL, Redis or worker at all; the whole tier runs in seconds.
- ``tests/integration``: real PostgreSQL and Redis (``tests/services.py``), and the
  in-process Celery worker; each test's database work is rolled back unless it is marked
  ``committed``.
- ``tests/system``: real ``celery worker`` subprocesses, SIGKILL, PostgreSQL stopped and
  started, the whole stack.

Services start only when an integration or system test is collected, once per run. The
app is configured through the environment variables production uses; this sets the ones
that need no service, before the app is imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

_state: dict[str, Path] = {}


def pytest_configure(config: pytest.Config) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="automation-tests-"))
    _state["tmp"] = tmp
    # Worker subprocesses write their logs beside DATA_DIR (tests/support.py).
    os.environ.update(DATA_DIR=str(tmp / "data"), ENVIRONMENT="development")
    for variable in ("FLOWER_BASIC_AUTH", "TIMEZONE"):
        os.environ.pop(variable, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "tmp" in _state:
        shutil.rmtree(_state["tmp"], ignore_errors=True)


@pytest.fixture(scope="session")
def app() -> Any:
    """The production Celery app; importing it reads the settings but contacts nothing."""
    from worker import app as celery_app

    return celery_app
