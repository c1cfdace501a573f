"""Migrations are tested code: they match the models, run both ways, and gate start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from db.migrate import head_revisions

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent


@pytest.mark.parametrize("program", ["worker", "beat"])
def test_celery_refuses_to_start_against_an_unmigrated_database(
    program: str, empty_database_url: str, tmp_path: Any
) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database_url, "DATA_DIR": str(tmp_path)}
    extra = ["--pool", "solo"] if program == "worker" else []
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", program, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode != 0
    heads = ", ".join(sorted(head_revisions()))
    assert (
        f"refusing to start: database schema is at empty, this code needs {heads}: "
        "run `automation db upgrade`"
    ) in done.stderr
