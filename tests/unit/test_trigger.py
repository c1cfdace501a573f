"""Enqueue by name: public names, short names and `all`; a bad name lists the good ones."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from tasks.automation.status import UnknownTriggerError, resolve_trigger
from worker.cli import main


def test_a_short_name_resolves_to_its_public_task(app: Any) -> None:
    assert resolve_trigger(app, "status") == ["automation.status"]


def test_ping_is_a_short_name_for_the_health_check(app: Any) -> None:
    assert resolve_trigger(app, "ping") == ["automation.ping"]


def test_a_public_task_name_resolves_to_itself(app: Any) -> None:
    assert resolve_trigger(app, "automation.status") == ["automation.status"]


def test_short_names_cover_the_spec_triggers_once_their_tasks_exist(app: Any) -> None:
    assert resolve_trigger(app, "listening_stats") == ["listening.aggregate"]
    assert resolve_trigger(app, "trending") == ["trending.calculate"]


def test_all_means_every_scheduled_task_in_dependency_order(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        app.conf,
        "beat_schedule",
        {
            "a": {"task": "playlists.generate_all", "cron": "0 3 * * *", "missed": "skip"},
            "b": {"task": "automation.status", "cron": "0 * * * *", "missed": "skip"},
            "c": {"task": "trending.calculate", "cron": "0 */6 * * *", "missed": "skip"},
            "d": {"task": "listening.aggregate", "cron": "0 2 * * *", "missed": "skip"},
            "e": {"task": "automation.status", "cron": "30 * * * *", "missed": "skip"},
        },
    )
    assert resolve_trigger(app, "all") == [
        "listening.aggregate",
        "trending.calculate",
        "playlists.generate_all",
        "automation.status",
    ]


def test_an_unknown_name_is_an_error_listing_the_valid_ones(app: Any) -> None:
    with pytest.raises(UnknownTriggerError) as error:
        resolve_trigger(app, "trendng")
    message = str(error.value)
    assert message.startswith("unknown task 'trendng'; valid: all, ")
    valid = message.split("valid: ")[1].split(", ")
    assert {"listening_stats", "smart_playlists", "status", "trending"} <= set(valid)
    assert {"trending.calculate", "playlists.generate_all", "automation.status"} <= set(valid)
    assert "automation.trigger" not in valid


def test_trigger_cannot_trigger_itself(app: Any) -> None:
    with pytest.raises(UnknownTriggerError):
        resolve_trigger(app, "automation.trigger")


def test_the_trigger_command_rejects_an_unknown_name_with_the_valid_ones() -> None:
    outcome = CliRunner().invoke(main, ["trigger", "nope"])

    assert outcome.exit_code == 1
    assert "unknown task 'nope'; valid: all, " in outcome.output
    assert "trending.calculate" in outcome.output
