"""The status report: what an operator checks first, built from PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from click.testing import CliRunner

from db.models import (
    Artist,
    BackgroundTask,
    BrokerReset,
    DeadLetter,
    ScheduleFire,
    SmartPlaylist,
    TaskRun,
    Track,
    TrendingTrack,
    User,
)
from tasks.automation.status import build_status
from tests import factories as f
from tests.integration.test_workflows import workflow
from worker.cli import main, render_status
from worker.schedules.store import set_entry
from worker.schedules.timing import Timing

NOW = dt.datetime(2026, 11, 22, 12, 7, tzinfo=dt.UTC)


@pytest.fixture
def catalogue(session: Any) -> dict[str, Any]:
    artist = Artist(name="Nina", genres=["jazz"])
    session.add(artist)
    session.flush()
    tracks = [Track(title=f"t{i}", artist_id=artist.id, genre="jazz") for i in range(2)]
    user = User()
    session.add_all([*tracks, user])
    session.commit()
    return {"tracks": tracks, "user": user}


def test_background_tasks_are_counted_by_status_and_type_with_age_and_stuck_rows(
    session: Any, app: Any, catalogue: dict[str, Any]
) -> None:
    first, second = (t.id for t in catalogue["tracks"])
    hour = dt.timedelta(hours=1)
    session.add_all(
        [
            # Waiting 2 h, its message published 2 h ago: presumed lost (threshold 15 min).
            BackgroundTask(
                task_type="mood_detection",
                track_id=first,
                created_at=NOW - 2 * hour,
                enqueued_at=NOW - 2 * hour,
            ),
            BackgroundTask(
                task_type="mood_detection",
                track_id=first,
                status="completed",
                created_at=NOW - 3 * hour,
            ),
            # Waiting 10 minutes, not yet published.
            BackgroundTask(
                task_type="energy_analysis",
                track_id=first,
                created_at=NOW - dt.timedelta(minutes=10),
            ),
            # Claimed 1 h ago: past the analysis family's 10-minute hard limit.
            BackgroundTask(
                task_type="energy_analysis",
                track_id=second,
                status="processing",
                created_at=NOW - 2 * hour,
                started_at=NOW - hour,
            ),
        ]
    )
    session.commit()

    report = build_status(session, app, NOW)["background_tasks"]

    assert report == {
        "total": 4,
        "by_status": {"pending": 2, "completed": 1, "processing": 1},
        "by_type": {
            "mood_detection": {"pending": 1, "completed": 1},
            "energy_analysis": {"pending": 1, "processing": 1},
        },
        "oldest_pending_seconds": 7200.0,
        "stuck_processing": 1,
        "lost_pending": 1,
        "undispatched": 1,
    }


def test_playlists_are_counted_by_type_with_the_latest_generation(
    session: Any, app: Any, catalogue: dict[str, Any]
) -> None:
    user = catalogue["user"]
    earlier, later = NOW - dt.timedelta(hours=5), NOW - dt.timedelta(hours=1)
    session.add_all(
        [
            SmartPlaylist(
                user_id=user.id,
                playlist_type="daily_mix",
                track_ids=[1],
                generated_at=earlier,
                expires_at=NOW,
            ),
            SmartPlaylist(
                user_id=user.id,
                playlist_type="new_for_you",
                track_ids=[2],
                generated_at=later,
                expires_at=NOW,
            ),
        ]
    )
    session.commit()

    report = build_status(session, app, NOW)["smart_playlists"]

    assert report == {
        "total": 2,
        "by_type": {"daily_mix": 1, "new_for_you": 1},
        "latest_generated_at": later.isoformat(),
    }


def test_trending_reports_when_it_was_last_calculated(
    session: Any, app: Any, catalogue: dict[str, Any]
) -> None:
    calculated = NOW - dt.timedelta(hours=2)
    for rank, track in enumerate(catalogue["tracks"], start=1):
        session.add(
            TrendingTrack(
                track_id=track.id,
                trend_score=1.0,
                play_count_24h=1,
                play_count_7d=1,
                unique_listeners_24h=1,
                unique_listeners_7d=1,
                calculated_at=calculated,
                rank=rank,
            )
        )
    session.commit()

    assert build_status(session, app, NOW)["trending"] == {
        "tracks": 2,
        "last_calculated_at": calculated.isoformat(),
    }


def test_status_shows_the_live_schedule_with_last_run_outcome_and_next_run(
    session: Any, app: Any
) -> None:
    set_entry(
        session,
        "status-every-10-minutes",
        "automation.status",
        Timing(cron="*/10 * * * *"),
        "ops",
        NOW - dt.timedelta(hours=1),
        known_tasks={"automation.status"},
    )
    session.add_all(
        [
            ScheduleFire(
                entry="status-every-10-minutes",
                slot=NOW - dt.timedelta(minutes=7),
                task="automation.status",
                args=[],
                kwargs={},
                task_id="b",
                token=1,
            ),
            TaskRun(
                task_id="b",
                task_name="automation.status",
                status="failure",
                started_at=NOW - dt.timedelta(minutes=7),
                runtime_seconds=0.5,
                error="boom",
            ),
        ]
    )
    session.commit()

    [entry] = build_status(session, app, NOW)["schedule"]

    assert entry["task"] == "automation.status"
    assert entry["next_run_at"] == "2026-11-22T12:10:00+00:00"
    assert entry["last_run"]["status"] == "failure"
    assert entry["last_run"]["error"] == "boom"
    assert entry["last_run"]["slot"] == "2026-11-22T12:00:00+00:00"
    text = render_status(build_status(session, app, NOW) | {"queues": {}})
    assert "status-every-10-minutes" in text and "failure in 0.5 s (boom)" in text


def test_a_scheduled_entry_that_never_ran_says_so(session: Any, app: Any) -> None:
    set_entry(
        session,
        "status-hourly",
        "automation.status",
        Timing(cron="0 * * * *"),
        "ops",
        NOW,
        known_tasks={"automation.status"},
    )

    [entry] = build_status(session, app, NOW)["schedule"]

    assert entry["last_run"] is None
    assert entry["next_run_at"] == "2026-11-22T13:00:00+00:00"
    assert "never run" in render_status(build_status(session, app, NOW) | {"queues": {}})


def test_task_runs_of_the_last_day_are_counted_by_status(session: Any, app: Any) -> None:
    session.add_all(
        [
            TaskRun(task_id="a", task_name="x.y", status="success", started_at=NOW),
            TaskRun(task_id="b", task_name="x.y", status="failure", started_at=NOW),
            TaskRun(
                task_id="c",
                task_name="x.y",
                status="failure",
                started_at=NOW - dt.timedelta(days=2),
            ),
        ]
    )
    session.commit()

    assert build_status(session, app, NOW)["task_runs_24h"] == {"success": 1, "failure": 1}


def test_dead_letters_are_counted(session: Any, app: Any) -> None:
    session.add(DeadLetter(reason="unknown task name 'x'", received_at=NOW))
    session.commit()

    assert build_status(session, app, NOW)["dead_letters"] == {
        "total": 1,
        "latest_at": NOW.isoformat(),
    }


def test_a_broker_reset_is_shown_with_what_was_published_again(session: Any, app: Any) -> None:
    session.add(
        BrokerReset(
            epoch="1795566532.451:50df75dc76d9",
            detected_at=NOW,
            detected_by="default@w1",
            ledger_republished=430,
        )
    )
    session.commit()

    report = build_status(session, app, NOW)

    assert report["broker_resets"] == {
        "total": 1,
        "latest": {
            "detected_at": NOW.isoformat(),
            "detected_by": "default@w1",
            "ledger_republished": 430,
        },
    }
    assert (
        f"broker resets:    1; latest {NOW.isoformat()} (noticed by default@w1, 430 ledger "
        "row(s) published again)" in render_status({**report, "queues": {}})
    )


def test_the_status_command_prints_json_for_machines_with_queue_depths() -> None:
    outcome = CliRunner().invoke(main, ["status", "--json"])

    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.output)
    assert report["queues"]["default"] == 0
    assert set(report) >= {"background_tasks", "smart_playlists", "trending", "schedule"}
    # Whether a restart of this Redis would lose its queues, and who is alive on it.
    assert set(report["broker"]) == {"persistence", "workers_alive"}


def test_the_status_command_prints_a_readable_summary() -> None:
    outcome = CliRunner().invoke(main, ["status"])

    assert outcome.exit_code == 0, outcome.output
    assert "background tasks: 0" in outcome.output
    assert "trending:         0 tracks; last calculated never" in outcome.output


def test_workflows_report_the_days_executions_by_status_and_what_waits(
    session: Any, app: Any
) -> None:
    active = workflow(session, app)
    workflow(session, app, active=False)
    hour = dt.timedelta(hours=1)
    f.execution(session, active, "pending", NOW - 3 * hour, run_after=NOW - 2 * hour)
    f.execution(session, active, "pending", NOW - dt.timedelta(minutes=5), run_after=NOW)
    # Waiting out a retry's backoff: pending, but not waiting yet.
    f.execution(session, active, "pending", NOW - 4 * hour, run_after=NOW + hour)
    f.execution(session, active, "processing", NOW - hour)
    f.execution(session, active, "completed", NOW - 3 * hour)
    f.execution(session, active, "skipped", NOW - 3 * hour, skip_reason="duplicate")
    f.execution(session, active, "failed", NOW - 30 * hour)  # before the day counted
    f.status_change(session, 7, "completed", NOW - dt.timedelta(seconds=90))
    f.status_change(session, 8, "completed", NOW - dt.timedelta(seconds=30))
    f.status_change(session, 9, "failed", NOW - 2 * hour, matched_at=NOW - 2 * hour)

    report = build_status(session, app, NOW)["workflows"]

    assert report == {
        "executions_24h": {
            "pending": 3,
            "processing": 1,
            "completed": 1,
            "failed": 0,
            "skipped": 1,
        },
        "oldest_pending": (NOW - 2 * hour).isoformat(),
        "oldest_pending_age_seconds": 7200.0,
        "unmatched_changes": 2,
        "oldest_unmatched": (NOW - dt.timedelta(seconds=90)).isoformat(),
        "workflows": {"active": 1, "inactive": 1},
    }


def test_workflows_with_nothing_to_report_have_every_key_zero_or_null(
    session: Any, app: Any
) -> None:
    report = build_status(session, app, NOW)

    assert report["workflows"] == {
        "executions_24h": {
            "pending": 0,
            "processing": 0,
            "completed": 0,
            "failed": 0,
            "skipped": 0,
        },
        "oldest_pending": None,
        "oldest_pending_age_seconds": None,
        "unmatched_changes": 0,
        "oldest_unmatched": None,
        "workflows": {"active": 0, "inactive": 0},
    }


def test_the_readable_status_shows_the_workflows_counts_and_what_waits(
    session: Any, app: Any
) -> None:
    report = build_status(session, app, NOW)
    report["workflows"] |= {
        "executions_24h": {
            "pending": 2,
            "processing": 1,
            "completed": 40,
            "failed": 3,
            "skipped": 9,
        },
        "oldest_pending": (NOW - dt.timedelta(minutes=2)).isoformat(),
        "oldest_pending_age_seconds": 120.0,
        "unmatched_changes": 4,
        "oldest_unmatched": (NOW - dt.timedelta(seconds=5)).isoformat(),
        "workflows": {"active": 2, "inactive": 1},
    }

    text = render_status({**report, "queues": {}})

    assert (
        "workflows:        2 active, 1 inactive; executions (24 h): pending 2, processing 1, "
        "completed 40, failed 3, skipped 9\n"
        f"  oldest pending: 120 s (since {(NOW - dt.timedelta(minutes=2)).isoformat()}); "
        "changes awaiting the dispatcher 4 "
        f"(oldest {(NOW - dt.timedelta(seconds=5)).isoformat()})" in text
    )
