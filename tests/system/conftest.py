"""The system tier: real ``celery worker`` subprocesses, SIGKILL, outages, the whole stack.

Every test here is ``committed``: the processes under test commit through their own
connections, so nothing can be rolled back, and the tables are truncated after each test
(see ``tests/services.py``). Queues and the run journal are emptied after every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    # Registered once however many tiers ask for it, so the services start once a run.
    config.pluginmanager.import_plugin("tests.services")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.committed)


@pytest.fixture(autouse=True)
def _isolated(request: pytest.FixtureRequest, engine: Engine) -> Iterator[None]:
    from tests.services import isolate

    yield from isolate(request, engine)
