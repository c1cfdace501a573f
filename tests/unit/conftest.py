"""The unit tier: pure functions and the app's configuration, with no service reachable.

Nothing here may need PostgreSQL, Redis or a worker. Should a test reach for one anyway,
the URLs below point at a closed port, so it fails at once instead of starting embedded
services (what unset URLs mean) or finding whatever runs on the default ports. In a run
of the whole suite the integration tier has already pointed them at real services, and
that is left alone: unit tests never use them.
"""

from __future__ import annotations

import os

import pytest

UNREACHABLE_DATABASE_URL = "postgresql+psycopg://unit-tests@127.0.0.1:1/no-database"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("DATABASE_URL", UNREACHABLE_DATABASE_URL)
    os.environ.setdefault("REDIS_URL", UNREACHABLE_REDIS_URL)
