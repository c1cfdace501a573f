"""The alert check: each condition opens one incident, posted once to the webhook (the
stand-in, over real HTTP), not again while it lasts, and its recovery is posted."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

import beat_schedule
from db.models import (
    AlertIncident,
    BackgroundTask,
    DeadLetter,
    IngestJob,
    JobStatusChange,
    ScheduleFire,
    TaskRun,
    Workflow,
)
from standins.webhook import Webhook
from tasks.ingest import control as ingest_control
from tasks.monitoring.alerts import check_alerts
from tests import factories as f
from tests.enrichment_support import NOW as ENRICHMENT_NOW
from tests.enrichment_support import add_listens, new_user
from worker import liveness
from worker.queues import QUEUE_NAMES, home_queue
from worker.schedules.store import set_entry
from worker.schedules.timing import Timing
from worker.settings import Settings, get_settings

NOW = dt.datetime(2026, 11, 22, 12, 7, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
FAKE_WORKER = "alerts-test-worker@host"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as hook:
        yield hook


@pytest.fixture
def settings(webhook: Webhook) -> Settings:
    return get_settings().model_copy(update={"alert_webhook_url": webhook.url})


@pytest.fixture(autouse=True)
def every_queue_served(redis_client: redis.Redis) -> Iterator[None]:
    """A live worker for every queue, so only the condition a test builds holds."""
    liveness.beat_heart(redis_client, FAKE_WORKER, 600, {"queues": list(QUEUE_NAMES)})
    yield
    redis_client.delete(liveness.HEARTBEAT_PREFIX + FAKE_WORKER)


def sent(hook: Webhook) -> list[tuple[str, str]]:
    return [(post["alert"], post["state"]) for post in hook.posts]


def stuck_jobs(session: Session, n: int) -> None:
    session.add_all(
        BackgroundTask(task_type="energy_analysis", created_at=NOW - 2 * dt.timedelta(hours=1))
        for _ in range(n)
    )
    session.flush()


@pytest.mark.broker_independent
def test_more_than_100_jobs_pending_for_an_hour_alert_once_then_recover(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    stuck_jobs(session, 101)

    check_alerts(session, redis_client, NOW, settings)
    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert sent(webhook) == [("ledger_stuck", "firing")]
    assert webhook.posts[0]["detail"] == {"pending": 101, "minutes": 60}
    assert webhook.posts[0]["text"].startswith("[FIRING] 101 ledger jobs pending")

    session.execute(update(BackgroundTask).values(status="completed"))
    check_alerts(session, redis_client, NOW + 2 * MINUTE, settings)
    check_alerts(session, redis_client, NOW + 3 * MINUTE, settings)
    assert sent(webhook) == [("ledger_stuck", "firing"), ("ledger_stuck", "resolved")]
    incident = session.scalars(select(AlertIncident)).one()
    assert incident.resolved_at == NOW + 2 * MINUTE
    assert incident.notified_resolved_at == NOW + 2 * MINUTE


@pytest.mark.broker_independent
def test_100_stuck_jobs_or_jobs_younger_than_an_hour_raise_nothing(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    stuck_jobs(session, 100)
    session.add_all(BackgroundTask(task_type="mood_detection", created_at=NOW) for _ in range(50))

    report = check_alerts(session, redis_client, NOW, settings)

    assert report["holding"] == []
    assert webhook.posts == []


@pytest.mark.broker_independent
def test_a_webhook_answering_500_is_retried_at_the_next_check_until_it_takes_the_alert(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    stuck_jobs(session, 101)
    webhook.status = 500

    check_alerts(session, redis_client, NOW, settings)
    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert webhook.refused == 2  # once a check, not more
    incident = session.scalars(select(AlertIncident)).one()
    assert incident.notified_open_at is None

    webhook.status = 204
    check_alerts(session, redis_client, NOW + 2 * MINUTE, settings)
    check_alerts(session, redis_client, NOW + 3 * MINUTE, settings)
    assert sent(webhook) == [("ledger_stuck", "firing")]
    assert webhook.refused == 2
    assert incident.notified_open_at == NOW + 2 * MINUTE


@pytest.mark.broker_independent
def test_without_a_webhook_the_incident_is_recorded_and_logged(
    session: Session, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    stuck_jobs(session, 101)
    settings = get_settings().model_copy(update={"alert_webhook_url": None})

    with caplog.at_level(logging.ERROR, logger="tasks.monitoring.alerts"):
        check_alerts(session, redis_client, NOW, settings)
        check_alerts(session, redis_client, NOW + MINUTE, settings)

    incident = session.scalars(select(AlertIncident)).one()
    assert (incident.alert, incident.opened_at, incident.resolved_at) == (
        "ledger_stuck",
        NOW,
        None,
    )
    assert [r.getMessage() for r in caplog.records if "alert opened" in r.getMessage()] == [
        "alert opened: 101 ledger jobs pending for over 60 min (threshold 100)"
    ]


def every_ten_minutes(session: Session, name: str = "status-every-10") -> None:
    set_entry(
        session,
        name,
        "automation.status",
        Timing(cron="*/10 * * * *"),
        "ops",
        NOW - dt.timedelta(hours=1),
        known_tasks={"automation.status"},
    )


def fire(session: Session, slot: dt.datetime, task_id: str, status: str | None = None) -> None:
    session.add(
        ScheduleFire(
            entry="status-every-10",
            slot=slot,
            fired_at=slot,
            task="automation.status",
            args=[],
            kwargs={},
            task_id=task_id,
            token=1,
        )
    )
    if status is not None:
        session.add(
            TaskRun(
                task_id=task_id,
                task_name="automation.status",
                status=status,
                started_at=slot,
                finished_at=slot + dt.timedelta(seconds=1),
            )
        )
    session.flush()


@pytest.mark.broker_independent
def test_a_slot_beat_did_not_fire_alerts_until_the_entry_fires_again(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    every_ten_minutes(session)
    noon = NOW.replace(minute=0)
    fire(session, noon - dt.timedelta(minutes=10), "a", "success")

    # 12:01: the 12:00 slot is within its two minutes' grace.
    check_alerts(session, redis_client, noon + MINUTE, settings)
    assert webhook.posts == []
    check_alerts(session, redis_client, NOW, settings)  # 12:07: it was missed
    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert sent(webhook) == [("schedule_missed:status-every-10", "firing")]
    assert webhook.posts[0]["detail"]["slot"] == noon.isoformat()

    fire(session, noon + dt.timedelta(minutes=10), "b", "success")
    check_alerts(session, redis_client, noon + dt.timedelta(minutes=11), settings)
    assert sent(webhook)[-1] == ("schedule_missed:status-every-10", "resolved")


@pytest.mark.broker_independent
def test_an_entry_whose_last_two_runs_failed_alerts_and_recovers_on_a_success(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    every_ten_minutes(session)
    noon = NOW.replace(minute=0)
    fire(session, noon - dt.timedelta(minutes=20), "a", "success")
    fire(session, noon - dt.timedelta(minutes=10), "b", "failure")
    check_alerts(session, redis_client, noon + MINUTE, settings)
    assert webhook.posts == []  # one failure is not yet an alert

    fire(session, noon, "c", "failure")
    check_alerts(session, redis_client, noon + 2 * MINUTE, settings)
    fire(session, noon + dt.timedelta(minutes=10), "d")  # sent, not run yet: still failing
    check_alerts(session, redis_client, noon + dt.timedelta(minutes=11), settings)
    assert sent(webhook) == [("schedule_failing:status-every-10", "firing")]
    assert webhook.posts[0]["detail"]["failures_in_a_row"] == 2

    session.add(
        TaskRun(task_id="d", task_name="automation.status", status="success", started_at=NOW)
    )
    check_alerts(session, redis_client, noon + dt.timedelta(minutes=12), settings)
    assert sent(webhook)[-1] == ("schedule_failing:status-every-10", "resolved")


@pytest.mark.broker_independent
def test_enrichment_stalled_for_two_hours_alerts_once_per_stall(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    alice = new_user(session)
    session.execute(
        text("INSERT INTO spotify_tokens (user_id, refresh_token_encrypted) VALUES (:u, 'x')"),
        {"u": alice},
    )
    add_listens(session, alice, [("Band", f"song {i}") for i in range(6)])
    session.execute(
        text(
            "UPDATE listens SET enrichment_status = 'matched', enriched_at = :at "
            "WHERE track_name = 'song 0'"
        ),
        {"at": ENRICHMENT_NOW},
    )
    hours = dt.timedelta(hours=1)

    check_alerts(session, redis_client, ENRICHMENT_NOW + hours, settings)
    assert webhook.posts == []
    check_alerts(session, redis_client, ENRICHMENT_NOW + 2 * hours + MINUTE, settings)
    check_alerts(session, redis_client, ENRICHMENT_NOW + 3 * hours, settings)
    assert sent(webhook) == [("enrichment_stalled", "firing")]
    assert webhook.posts[0]["detail"]["backlog"] == 5

    session.execute(
        text("UPDATE listens SET enrichment_status = 'matched', enriched_at = :at"),
        {"at": ENRICHMENT_NOW + 3 * hours},
    )
    check_alerts(session, redis_client, ENRICHMENT_NOW + 3 * hours + MINUTE, settings)
    assert sent(webhook)[-1] == ("enrichment_stalled", "resolved")


@pytest.mark.broker_independent
def test_dead_letters_alert_when_new_ones_arrive_and_recover_at_a_check_without_any(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    session.add_all(DeadLetter(reason="unknown task", task_name="nope") for _ in range(2))
    session.flush()
    check_alerts(session, redis_client, NOW, settings)
    assert sent(webhook) == [("dead_letters", "firing")]
    assert webhook.posts[0]["detail"]["new"] == 2

    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert sent(webhook)[-1] == ("dead_letters", "resolved")

    session.add(DeadLetter(reason="pickled body", task_name="nope"))
    session.flush()
    check_alerts(session, redis_client, NOW + 2 * MINUTE, settings)
    check_alerts(session, redis_client, NOW + 3 * MINUTE, settings)
    assert sent(webhook) == [
        ("dead_letters", "firing"),
        ("dead_letters", "resolved"),
        ("dead_letters", "firing"),
        ("dead_letters", "resolved"),
    ]
    assert webhook.posts[2]["detail"]["new"] == 1


@pytest.mark.broker_independent
def test_a_queue_without_a_live_worker_alerts_until_one_comes(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    others = [q for q in QUEUE_NAMES if q != "analysis"]
    liveness.beat_heart(redis_client, FAKE_WORKER, 600, {"queues": others})
    if any("analysis" in qs for qs in liveness.worker_queues(redis_client).values()):
        pytest.skip("a real analysis worker is alive in this run")

    check_alerts(session, redis_client, NOW, settings)
    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert sent(webhook) == [("no_worker:analysis", "firing")]

    liveness.beat_heart(redis_client, FAKE_WORKER, 600, {"queues": list(QUEUE_NAMES)})
    check_alerts(session, redis_client, NOW + 2 * MINUTE, settings)
    assert sent(webhook) == [("no_worker:analysis", "firing"), ("no_worker:analysis", "resolved")]


@pytest.mark.broker_independent
def test_an_incident_opened_and_resolved_while_the_webhook_was_down_is_posted_in_order(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    stuck_jobs(session, 101)
    webhook.status = 500
    check_alerts(session, redis_client, NOW, settings)
    session.execute(update(BackgroundTask).values(status="completed"))
    check_alerts(session, redis_client, NOW + MINUTE, settings)

    webhook.status = 204
    check_alerts(session, redis_client, NOW + 2 * MINUTE, settings)
    assert sent(webhook) == [("ledger_stuck", "firing"), ("ledger_stuck", "resolved")]


def _incident(
    session: Session, alert: str, opened: dt.datetime, resolved: dt.datetime | None
) -> None:
    session.add(AlertIncident(alert=alert, opened_at=opened, resolved_at=resolved, summary=alert))
    session.flush()


@pytest.mark.broker_independent
def test_a_refused_notice_ends_the_round_so_later_ones_wait_their_turn(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    _incident(session, "first", NOW - 3 * MINUTE, None)
    _incident(session, "second", NOW - 2 * MINUTE, None)
    webhook.status = 500

    check_alerts(session, redis_client, NOW, settings)

    assert webhook.refused == 1  # "second" was not tried behind the refused "first"
    webhook.status = 204
    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert sent(webhook) == [("first", "firing"), ("second", "firing")]


@pytest.mark.broker_independent
def test_an_incident_over_for_more_than_a_day_is_not_posted_late(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    _incident(session, "old news", NOW - 3 * dt.timedelta(days=1), NOW - 2 * dt.timedelta(days=1))
    _incident(session, "recent", NOW - 3 * dt.timedelta(hours=1), NOW - dt.timedelta(hours=1))

    check_alerts(session, redis_client, NOW, settings)

    assert sent(webhook) == [("recent", "firing"), ("recent", "resolved")]


# -- the task, its queue and its schedule --------------------------------------------------


@pytest.mark.broker_independent
def test_check_alerts_runs_every_minute_on_the_default_queue_skipping_missed_slots() -> None:
    entry = beat_schedule.SCHEDULE["check-alerts"]
    assert entry == {"task": "monitoring.check_alerts", "cron": "* * * * *", "missed": "skip"}
    assert home_queue("monitoring.check_alerts") == "default"


def test_check_alerts_is_registered_and_runs_through_the_worker(
    app: Any, celery_worker: Any, engine: Any
) -> None:
    assert "monitoring.check_alerts" in app.tasks
    with Session(engine) as session:
        session.add(DeadLetter(reason="unknown task", task_name="nope"))
        session.commit()

    report = app.send_task("monitoring.check_alerts").get(timeout=30)

    assert report["opened"] == ["dead_letters"]
    with Session(engine) as session:
        incident = session.scalars(select(AlertIncident)).one()
    assert json.loads(json.dumps(incident.detail))["new"] == 1


@pytest.mark.broker_independent
def test_status_changes_the_workflows_dispatcher_leaves_unmatched_alert_until_matched(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    f.status_change(session, job_id=1, new_status="completed", changed_at=NOW - 6 * MINUTE)
    check_alerts(session, redis_client, NOW, settings)
    assert sent(webhook) == [("workflows_unmatched", "firing")]
    assert webhook.posts[0]["detail"] == {"unmatched": 1, "oldest_seconds": 360}

    session.execute(update(JobStatusChange).values(matched_at=NOW))
    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert sent(webhook)[-1] == ("workflows_unmatched", "resolved")


@pytest.mark.broker_independent
def test_a_workflow_execution_due_ten_minutes_ago_and_not_started_alerts(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    user = f.user(session)
    workflow = Workflow(
        name="w",
        source="upload_jobs",
        definition={},
        secret_encrypted="x",
        created_by="test",
        user_id=user.id,
    )
    session.add(workflow)
    session.flush()
    f.execution(session, workflow.id, "pending", NOW - 20 * MINUTE, run_after=NOW - 11 * MINUTE)
    f.execution(session, workflow.id, "pending", NOW, run_after=NOW + MINUTE)  # not due yet

    check_alerts(session, redis_client, NOW, settings)

    assert sent(webhook) == [("workflows_waiting", "firing")]
    assert webhook.posts[0]["detail"] == {"pending": 2, "oldest_seconds": 660}


def queued_ingest_jobs(session: Session, n: int, age: dt.timedelta = 2 * HOUR) -> None:
    session.add_all(
        IngestJob(object_path=f"uploads/x/{i}.wav", created_at=NOW - age) for i in range(n)
    )
    session.flush()


@pytest.mark.broker_independent
def test_more_than_100_ingest_jobs_queued_for_an_hour_alert_once_then_recover(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    queued_ingest_jobs(session, 101)

    check_alerts(session, redis_client, NOW, settings)
    check_alerts(session, redis_client, NOW + MINUTE, settings)
    assert sent(webhook) == [("ingest_stuck", "firing")]
    assert webhook.posts[0]["text"] == (
        "[FIRING] 101 ingest jobs queued for over 60 min (threshold 100)"
    )
    assert webhook.posts[0]["detail"] == {"queued": 101, "minutes": 60, "paused": False}

    session.execute(update(IngestJob).values(status="processing"))
    check_alerts(session, redis_client, NOW + 2 * MINUTE, settings)
    check_alerts(session, redis_client, NOW + 3 * MINUTE, settings)
    assert sent(webhook) == [("ingest_stuck", "firing"), ("ingest_stuck", "resolved")]
    incident = session.scalars(select(AlertIncident)).one()
    assert incident.resolved_at == NOW + 2 * MINUTE


@pytest.mark.broker_independent
def test_100_ingest_jobs_queued_for_an_hour_raise_nothing(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    queued_ingest_jobs(session, 100)

    report = check_alerts(session, redis_client, NOW, settings)

    assert report["holding"] == []
    assert webhook.posts == []


@pytest.mark.broker_independent
def test_ingest_jobs_queued_for_less_than_an_hour_raise_nothing(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    queued_ingest_jobs(session, 150, age=59 * MINUTE)

    report = check_alerts(session, redis_client, NOW, settings)

    assert report["holding"] == []
    assert webhook.posts == []


@pytest.mark.broker_independent
def test_a_second_ingest_incident_after_a_recovery_is_posted_again(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    queued_ingest_jobs(session, 101)
    check_alerts(session, redis_client, NOW, settings)
    session.execute(update(IngestJob).values(status="done"))
    check_alerts(session, redis_client, NOW + MINUTE, settings)

    queued_ingest_jobs(session, 101)
    check_alerts(session, redis_client, NOW + 2 * MINUTE, settings)
    check_alerts(session, redis_client, NOW + 3 * MINUTE, settings)

    assert sent(webhook) == [
        ("ingest_stuck", "firing"),
        ("ingest_stuck", "resolved"),
        ("ingest_stuck", "firing"),
    ]
    assert len(session.scalars(select(AlertIncident)).all()) == 2


@pytest.mark.broker_independent
def test_the_ingest_alert_says_when_the_pipeline_is_paused(
    session: Session, redis_client: redis.Redis, webhook: Webhook, settings: Settings
) -> None:
    queued_ingest_jobs(session, 101)
    ingest_control.pause(session, "ops", NOW - 3 * HOUR)

    check_alerts(session, redis_client, NOW, settings)

    assert webhook.posts[0]["summary"] == (
        "101 ingest jobs queued for over 60 min (threshold 100); ingest is paused (by ops)"
    )
    assert webhook.posts[0]["detail"]["paused"] is True
