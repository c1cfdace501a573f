"""``GET /metrics`` over real HTTP: a viewer's token, Prometheus's text format, and the values
of a fixture built here (rows in the tables, Redis queues, a run through the real worker)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from console.accounts import create_admin, issue_token
from db.models import (
    BackgroundTask,
    DeadLetter,
    IngestJob,
    ScheduleFire,
    TaskRun,
)
from tasks.enrichment.spotify import rate_limiter
from tasks.ingest import control
from tests import factories
from tests.enrichment_support import add_listens, new_user
from tests.integration.test_workflows import workflow
from tests.support import serve_console
from worker import liveness
from worker.schedules.store import set_entry
from worker.schedules.timing import Timing
from worker.settings import get_settings

pytestmark = pytest.mark.committed

HOUR = dt.timedelta(hours=1)
FAKE_WORKER = "metrics-test-worker@host"


@pytest.fixture(scope="module")
def console() -> Iterator[str]:
    with serve_console() as base:
        yield base


def token_for(session: Session, name: str, role: str) -> str:
    create_admin(session, name, role)
    token, _ = issue_token(session, name)
    session.commit()
    return token


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(console: str, token: str) -> Samples:
    answer = httpx.get(
        f"{console}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_without_a_token_is_401(console: str) -> None:
    answer = httpx.get(f"{console}/metrics", timeout=10)

    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


def test_metrics_refuses_a_token_without_read_rights(console: str, session: Session) -> None:
    token = token_for(session, "sender", "service")

    answer = httpx.get(
        f"{console}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )

    assert answer.status_code == 403


def ledger_fixture(session: Session, now: dt.datetime) -> None:
    session.add_all(
        [
            *(
                BackgroundTask(
                    task_type="energy_analysis", created_at=now - 2 * HOUR, enqueued_at=now
                )
                for _ in range(3)
            ),
            BackgroundTask(task_type="energy_analysis", created_at=now - dt.timedelta(minutes=5)),
            BackgroundTask(task_type="mood_detection", status="processing", started_at=now),
            *(BackgroundTask(task_type="genre_classification", status="failed") for _ in range(2)),
            *(BackgroundTask(task_type="mood_detection", status="completed") for _ in range(4)),
        ]
    )


def enrichment_fixture(session: Session, enriched_at: dt.datetime) -> None:
    alice = new_user(session)
    add_listens(session, alice, [("Band", f"song {i}") for i in range(10)])
    session.execute(
        text(
            "UPDATE listens SET enrichment_status = 'matched', enriched_at = :at "
            "WHERE track_name IN ('song 0', 'song 1', 'song 2', 'song 3')"
        ),
        {"at": enriched_at},
    )


def schedule_fixture(session: Session, now: dt.datetime) -> dt.datetime:
    """An entry that last succeeded 10 minutes ago: returns when that run finished."""
    set_entry(
        session,
        "status-every-10",
        "automation.status",
        Timing(cron="*/10 * * * *"),
        "ops",
        now - 2 * HOUR,
        known_tasks={"automation.status"},
    )
    slot = now.replace(minute=now.minute // 10 * 10, second=0, microsecond=0)
    finished = slot + dt.timedelta(seconds=3)
    session.add(
        ScheduleFire(
            entry="status-every-10",
            slot=slot,
            fired_at=slot,
            task="automation.status",
            args=[],
            kwargs={},
            task_id="fired-1",
            token=1,
        )
    )
    session.add(
        TaskRun(
            task_id="fired-1",
            task_name="automation.status",
            status="success",
            started_at=slot,
            finished_at=finished,
        )
    )
    return finished


def test_metrics_report_the_state_of_a_known_fixture(
    console: str, session: Session, engine: Engine, redis_client: redis.Redis, app: Any
) -> None:
    token = token_for(session, "grafana", "viewer")
    now = dt.datetime.now(dt.UTC)
    ledger_fixture(session, now)
    session.add_all(DeadLetter(reason="unknown task", task_name="nope") for _ in range(2))
    enriched_at = now - 3 * HOUR
    enrichment_fixture(session, enriched_at)
    succeeded = schedule_fixture(session, now)
    session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE background_tasks, listens"))  # the estimates' source
    # Queues the test worker does not consume (tests/services.py), so the messages stay;
    # sent through the broker of the run, Redis or RabbitMQ.
    for _ in range(3):
        app.send_task("automation.ping", queue="analysis")
    app.send_task("automation.ping", queue="enrichment", priority=3)  # Redis: its own list
    liveness.beat_heart(redis_client, FAKE_WORKER, 60, {"queues": ["analysis"]})

    try:
        samples = scrape(console, token)
    finally:
        redis_client.delete(liveness.HEARTBEAT_PREFIX + FAKE_WORKER)

    assert value(samples, "automation_source_up", source="postgresql") == 1
    assert value(samples, "automation_source_up", source="redis") == 1
    assert value(samples, "automation_queue_depth", queue="analysis") == 3
    assert value(samples, "automation_queue_depth", queue="enrichment") == 1
    assert value(samples, "automation_queue_depth", queue="playlists") == 0
    assert value(samples, "automation_queue_workers", queue="analysis") == 1
    assert value(samples, "automation_workers_online") >= 1

    ledger = {
        (labels[1][1], labels[0][1]): v
        for (name, labels), v in samples.items()
        if name == "automation_ledger_rows"
    }
    assert ledger == {
        ("energy_analysis", "pending"): 4,
        ("mood_detection", "processing"): 1,
        ("genre_classification", "failed"): 2,
    }
    assert value(samples, "automation_ledger_completed_rows_estimated") == 4
    assert value(samples, "automation_ledger_oldest_pending_age_seconds") >= 2 * 3600
    assert value(samples, "automation_ledger_stale_pending") == 3
    assert value(samples, "automation_ledger_undispatched") == 1
    assert value(samples, "automation_ledger_lost_pending") == 0

    assert value(samples, "automation_dead_letters") == 2
    assert value(samples, "automation_dead_letters_latest_timestamp_seconds") > 0

    assert value(samples, "automation_enrichment_listens_estimated", status="pending") == 6
    assert value(samples, "automation_enrichment_listens_estimated", status="matched") == 4
    assert value(samples, "automation_enrichment_backlog_estimated") == 6
    assert value(samples, "automation_enrichment_coverage_ratio") == pytest.approx(0.4)
    assert value(samples, "automation_enrichment_last_progress_timestamp_seconds") == pytest.approx(
        enriched_at.timestamp()
    )
    assert value(samples, "automation_spotify_paused") == 0

    entry = {"entry": "status-every-10", "task": "automation.status"}
    assert value(
        samples, "automation_schedule_last_success_timestamp_seconds", **entry
    ) == pytest.approx(succeeded.timestamp())
    assert value(samples, "automation_schedule_failed_runs_in_a_row", **entry) == 0
    assert value(samples, "automation_schedule_paused", **entry) == 0


def test_a_spotify_pause_is_reported_with_its_remaining_time(
    console: str, session: Session, redis_client: redis.Redis
) -> None:
    token = token_for(session, "viewer-2", "viewer")
    rate_limiter(get_settings(), redis_client).pause(120, "429 from Spotify")

    samples = scrape(console, token)

    assert value(samples, "automation_spotify_paused") == 1
    assert 100 < value(samples, "automation_spotify_pause_remaining_seconds") <= 120


def test_runs_through_the_worker_are_counted_by_task_and_outcome_with_their_durations(
    console: str, session: Session, app: Any, celery_worker: Any
) -> None:
    token = token_for(session, "viewer-3", "viewer")

    for _ in range(2):
        app.send_task("automation.ping").get(timeout=30)
    samples = scrape(console, token)

    task = {"task": "automation.ping"}
    assert value(samples, "automation_task_runs_total", outcome="success", **task) == 2
    assert value(samples, "automation_task_run_duration_seconds_count", **task) == 2
    assert value(samples, "automation_task_run_duration_seconds_bucket", le="+Inf", **task) == 2
    assert 0 < value(samples, "automation_task_run_duration_seconds_sum", **task) < 60


def workflow_fixture(session: Session, app: Any, now: dt.datetime) -> None:
    """Two due pending executions (the older waiting 10 minutes), one held back by a
    backoff, one processing, failures today and two days ago; three changes not matched
    (the oldest 7 minutes old), one matched."""
    owner = factories.user(session)
    workflow_id = workflow(session, app)
    job = factories.upload(session, owner.id).id
    session.execute(text("DELETE FROM job_status_changes"))  # the upload's own change

    def execution(status: str, created_at: dt.datetime = now, **fields: Any) -> None:
        factories.execution(session, workflow_id, status, created_at, job_id=job, **fields)

    execution("pending", run_after=now - dt.timedelta(minutes=10))
    execution("pending", run_after=now - dt.timedelta(minutes=1))
    execution("pending", run_after=now + HOUR)  # a retry's backoff: not late
    execution("processing")
    execution("failed")
    execution("failed")
    execution("failed", now - 48 * HOUR)
    execution("completed")

    def change(age: dt.timedelta, matched: bool = False) -> None:
        matched_at = now if matched else None
        factories.status_change(session, job, "completed", now - age, matched_at=matched_at)

    change(dt.timedelta(minutes=30), matched=True)
    change(dt.timedelta(minutes=7))
    change(dt.timedelta(minutes=2))
    change(dt.timedelta(seconds=5))


def test_metrics_report_workflow_executions_and_unmatched_changes(
    console: str, session: Session, app: Any
) -> None:
    token = token_for(session, "grafana-wf", "viewer")
    now = dt.datetime.now(dt.UTC)
    workflow_fixture(session, app, now)
    session.commit()

    samples = scrape(console, token)

    assert value(samples, "automation_workflow_executions", status="pending") == 3
    assert value(samples, "automation_workflow_executions", status="processing") == 1
    assert value(samples, "automation_workflow_executions_failed_24h") == 2
    assert 600 <= value(samples, "automation_workflow_oldest_pending_age_seconds") < 660
    assert value(samples, "automation_workflow_unmatched_changes") == 3
    assert 420 <= value(samples, "automation_workflow_unmatched_oldest_age_seconds") < 480


def test_workflow_metrics_are_zero_with_nothing_to_do(console: str, session: Session) -> None:
    token = token_for(session, "grafana-idle", "viewer")

    samples = scrape(console, token)

    assert value(samples, "automation_workflow_oldest_pending_age_seconds") == 0
    assert value(samples, "automation_workflow_unmatched_oldest_age_seconds") == 0
    assert value(samples, "automation_workflow_unmatched_changes") == 0


def test_every_metric_the_alert_rules_and_the_dashboard_use_is_in_a_scrape(
    console: str, session: Session, app: Any, celery_worker: Any
) -> None:
    from tests.unit.test_monitoring_files import dashboard_exprs, metric_names, rules

    token = token_for(session, "viewer-4", "viewer")
    set_entry(
        session,
        "status-hourly",
        "automation.status",
        Timing(cron="0 * * * *"),
        "ops",
        dt.datetime.now(dt.UTC),
        known_tasks={"automation.status"},
    )
    session.add(BackgroundTask(task_type="energy_analysis"))  # a labelled family has samples
    session.commit()
    app.send_task("automation.ping").get(timeout=30)

    scraped = {name for name, _ in scrape(console, token)}

    used = metric_names([rule["expr"] for rule in rules()] + dashboard_exprs())
    assert used - scraped == set()


def ingest_fixture(session: Session, now: dt.datetime) -> None:
    """Three jobs queued two hours ago and one just now, one processing, two failed (one in
    the last hour), three done (two in the last hour); the pipeline paused."""

    def job(status: str, **fields: Any) -> None:
        session.add(IngestJob(object_path=f"uploads/x/{status}.wav", status=status, **fields))

    for _ in range(3):
        job("queued", created_at=now - 2 * HOUR)
    job("queued", created_at=now)
    job("processing")
    job("failed", finished_at=now - dt.timedelta(minutes=5))
    job("failed", finished_at=now - 3 * HOUR)
    job("done", finished_at=now - dt.timedelta(minutes=1))
    job("done", finished_at=now - dt.timedelta(minutes=50))
    job("done", finished_at=now - 5 * HOUR)
    control.pause(session, "ops", now)


def test_metrics_report_ingest_jobs_the_stale_queue_and_the_pause(
    console: str, session: Session, engine: Engine
) -> None:
    token = token_for(session, "grafana-ingest", "viewer")
    now = dt.datetime.now(dt.UTC)
    ingest_fixture(session, now)
    session.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE ingest_jobs"))  # the done estimate's source

    samples = scrape(console, token)

    assert value(samples, "automation_ingest_jobs", status="queued") == 4
    assert value(samples, "automation_ingest_jobs", status="processing") == 1
    assert value(samples, "automation_ingest_jobs", status="failed") == 2
    assert value(samples, "automation_ingest_done_jobs_estimated") == 3
    assert value(samples, "automation_ingest_jobs_finished_1h", outcome="done") == 2
    assert value(samples, "automation_ingest_jobs_finished_1h", outcome="failed") == 1
    assert value(samples, "automation_ingest_stale_queued") == 3  # over ALERT_INGEST_QUEUED_MINUTES
    assert 2 * 3600 <= value(samples, "automation_ingest_oldest_queued_age_seconds") < 2 * 3600 + 60
    assert value(samples, "automation_ingest_paused") == 1


def test_ingest_metrics_are_zero_and_running_with_no_jobs(console: str, session: Session) -> None:
    token = token_for(session, "grafana-ingest-idle", "viewer")

    samples = scrape(console, token)

    assert value(samples, "automation_ingest_jobs", status="queued") == 0
    assert value(samples, "automation_ingest_stale_queued") == 0
    assert value(samples, "automation_ingest_oldest_queued_age_seconds") == 0
    assert value(samples, "automation_ingest_paused") == 0
