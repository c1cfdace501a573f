"""The status command when PostgreSQL cannot be reached: one line, saying how to fix it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from worker.cli import main


def test_the_status_command_says_in_one_line_when_postgres_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from db import session as db_session
    from worker import settings

    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/nowhere")
    settings.get_settings.cache_clear()
    db_session.get_engine.cache_clear()
    db_session._sessionmaker.cache_clear()
    try:
        outcome = CliRunner().invoke(main, ["status"])
    finally:
        settings.get_settings.cache_clear()
        db_session.get_engine.cache_clear()
        db_session._sessionmaker.cache_clear()

    assert outcome.exit_code == 1
    [line] = outcome.output.strip().splitlines()
    assert line.startswith("Error: cannot reach PostgreSQL at postgresql+psycopg://nobody@")
    assert "`automation up` starts it" in line
