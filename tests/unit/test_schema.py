"""Start-up checks that need no database: beat refuses a default schedule naming unknown
tasks, or one whose timing cannot be used."""

from __future__ import annotations

from typing import Any

import pytest

import beat_schedule
from worker.signals import validate_schedule


def test_a_schedule_entry_naming_an_unregistered_task_is_refused(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        app.conf,
        "beat_schedule",
        {"typo": {"task": "trending.calcluate", "cron": "0 * * * *", "missed": "skip"}},
    )
    with pytest.raises(ValueError, match=r"unregistered tasks: typo -> trending.calcluate"):
        validate_schedule(app)


def test_a_schedule_entry_with_a_bad_cron_is_refused(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        app.conf,
        "beat_schedule",
        {"bad": {"task": "trending.calculate", "cron": "0 25 * * *", "missed": "skip"}},
    )
    with pytest.raises(ValueError, match=r"schedule entry 'bad': bad cron expression"):
        validate_schedule(app)


def test_the_code_default_schedule_is_valid(app: Any) -> None:
    assert app.conf.beat_schedule is beat_schedule.SCHEDULE
    validate_schedule(app)


def test_the_app_names_the_fenced_scheduler(app: Any) -> None:
    assert app.conf.beat_scheduler == "worker.schedules.scheduler:DatabaseScheduler"
