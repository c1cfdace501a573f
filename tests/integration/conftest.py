"""The integration tier: real PostgreSQL and Redis, and the in-process Celery worker.

Each test's ``session`` is rolled back at the end; a test whose code commits through its
own sessions or connections is marked ``committed`` and the tables are truncated after it
(see ``tests/services.py``). Queues and the run journal are emptied after every test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine


def pytest_configure(config: pytest.Config) -> None:
    # Registered once however many tiers ask for it, so the services start once a run.
    config.pluginmanager.import_plugin("tests.services")


@pytest.fixture(autouse=True)
def _isolated(request: pytest.FixtureRequest, engine: Engine) -> Iterator[None]:
    from tests.services import isolate

    yield from isolate(request, engine)
