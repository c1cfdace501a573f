"""Start-up checks that need no database: beat refuses a schedule naming unknown tasks."""

from __future__ import annotations

from typing import Any

import pytest

from worker.signals import validate_schedule


def test_a_schedule_entry_naming_an_unregistered_task_is_refused(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        app.conf, "beat_schedule", {"typo": {"task": "trending.calcluate", "schedule": 60.0}}
    )
    with pytest.raises(ValueError, match=r"unregistered tasks: typo -> trending.calcluate"):
        validate_schedule(app)
