"""``GET /metrics``: the system's state in Prometheus's text format, for a viewer's token.

A custom collector reads every value at scrape time (no global gauges to keep in step),
from three places:

- Redis: queue depths (or RabbitMQ's, by passive declares), workers' heartbeats with their
  queues, the Spotify pause, the journal's backlog, and the run counters. The API process
  is no worker and sees no task finish, so runs are counted where they finish: the run
  journal's finish script adds to per-task counters and duration buckets in the same
  Redis call that appends the finish (``worker.run_journal``). They only ever go up (a
  Redis that loses its data starts them again from zero, which Prometheus's ``rate`` reads
  as a counter reset).
- PostgreSQL, without a full scan (the target is 50 ms at 10M plays, measured by
  ``bench/metrics_scrape.py``): see ``tasks.monitoring.readings``. Counts over few rows use
  their indexes (active and failed ledger rows, stale ones, an entry's newest fires,
  workflow executions to do or failed in the last day, status changes not yet matched,
  ingest jobs waiting, running, failed or finished in the last hour); completed ledger
  rows, done ingest jobs and listens by enrichment status, which only a whole-table count
  would give exactly, are the planner's estimates (``*_estimated``), as fresh as the last
  ANALYZE (a status too rare to be among a column's common values reads 0).

A source that does not answer is reported as ``automation_source_up{source=...} 0`` and its
metrics are left out, so a scrape still answers while Redis or PostgreSQL is down.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Annotated, Any

import kombu.exceptions
import redis
import sqlalchemy.exc
from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from console.accounts import Principal
from console.auth import ConsoleDep, require
from console.context import Console
from db.session import session_scope
from tasks.automation.status import LEDGER, amqp_queue_depths, queue_depths
from tasks.enrichment.monitoring import spotify_pause
from tasks.monitoring import readings
from worker import liveness
from worker.ledger import limit_params
from worker.queues import QUEUE_NAMES
from worker.run_journal import pending_entries, read_run_metrics

log = logging.getLogger(__name__)
router = APIRouter(tags=["metrics"])

LISTEN_STATUSES = ("pending", "matched", "not_found", "failed")


def _ts(value: dt.datetime | None) -> float:
    """A time as Prometheus takes it (Unix seconds); 0: never."""
    return 0.0 if value is None else value.timestamp()


def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"automation_{name}", doc, labels=labels)


def single(name: str, doc: str, value: float) -> GaugeMetricFamily:
    metric = gauge(name, doc)
    metric.add_metric([], value)
    return metric


class AutomationCollector(Collector):
    def __init__(self, ctx: Console) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        now = dt.datetime.now(dt.UTC)
        up = gauge("source_up", "1 if the source answered this scrape.", ["source"])
        for source, reader in (("redis", self._redis), ("postgresql", self._database)):
            try:
                metrics = list(reader(now))
            except (redis.RedisError, sqlalchemy.exc.DBAPIError) as exc:
                log.warning("/metrics: %s unavailable: %s", source, exc)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from metrics
        if self.ctx.settings.broker_is_amqp:
            try:
                depths = amqp_queue_depths(self.ctx.celery)
            except kombu.exceptions.OperationalError as exc:
                log.warning("/metrics: RabbitMQ unavailable: %s", exc)
                up.add_metric(["rabbitmq"], 0)
            else:
                up.add_metric(["rabbitmq"], 1)
                yield self._depths(depths)
        yield up

    def _depths(self, depths: dict[str, int]) -> Metric:
        metric = gauge("queue_depth", "Messages waiting in the queue.", ["queue"])
        for queue, depth in sorted(depths.items()):
            metric.add_metric([queue], depth)
        return metric

    def _redis(self, now: dt.datetime) -> Iterator[Metric]:
        client = self.ctx.redis
        settings = self.ctx.settings
        if not settings.broker_is_amqp:
            yield self._depths(queue_depths(client))
        workers = liveness.worker_queues(client)
        online = gauge("workers_online", "Workers with a current heartbeat.")
        online.add_metric([], len(workers))
        yield online
        per_queue = gauge("queue_workers", "Live workers consuming the queue.", ["queue"])
        for queue in QUEUE_NAMES:
            per_queue.add_metric([queue], sum(queue in qs for qs in workers.values()))
        yield per_queue

        runs = read_run_metrics(client)
        counter = CounterMetricFamily(
            "automation_task_runs",
            "Finished task runs by task and outcome (success, failure, retry, ...).",
            labels=["task", "outcome"],
        )
        for (task, outcome), count in sorted(runs.runs.items()):
            counter.add_metric([task, outcome], count)
        yield counter
        durations = HistogramMetricFamily(
            "automation_task_run_duration_seconds",
            "How long finished task runs took.",
            labels=["task"],
        )
        for task, buckets in sorted(runs.buckets.items()):
            durations.add_metric([task], buckets, sum_value=runs.sums[task])
        yield durations

        pause = spotify_pause(settings, client)
        paused = gauge("spotify_paused", "1 while Spotify's 429 pause holds every request.")
        paused.add_metric([], 0 if pause is None else 1)
        yield paused
        remaining = gauge("spotify_pause_remaining_seconds", "Seconds the pause still holds.")
        remaining.add_metric([], 0 if pause is None else pause["seconds"])
        yield remaining
        waiting = gauge("run_journal_waiting", "Run records in Redis not yet in PostgreSQL.")
        waiting.add_metric([], pending_entries(client))
        yield waiting

    def _database(self, now: dt.datetime) -> Iterator[Metric]:
        settings = self.ctx.settings
        metrics: list[Metric] = []
        with session_scope() as session:
            exact = readings.ledger_exact(session)
            ledger = gauge(
                "ledger_rows",
                "Ledger rows (background_tasks) pending, processing or failed, by type.",
                ["task_type", "status"],
            )
            for (task_type, status), count in sorted(exact.items()):
                ledger.add_metric([task_type, status], count)
            metrics.append(ledger)
            # Completed rows are most of the table: the planner's count of the whole
            # table, less the exact rest.
            completed = gauge(
                "ledger_completed_rows_estimated",
                "Completed ledger rows: an estimate (planner's table size, less the rest).",
            )
            whole = readings.estimated_rows(session, "background_tasks")
            completed.add_metric([], max(0, whole - sum(exact.values())))
            metrics.append(completed)

            lost_before = now - dt.timedelta(seconds=settings.background_lost_after_seconds)
            health = session.execute(
                LEDGER["summary"],
                {"now": now, "lost_before": lost_before, **limit_params(self.ctx.celery)},
            ).one()
            stale = readings.stale_pending(
                session, now, dt.timedelta(minutes=settings.alert_stuck_jobs_minutes)
            )
            metrics += [
                single(
                    "ledger_oldest_pending_age_seconds",
                    "Age of the oldest pending ledger row (0: none).",
                    float(health.oldest_pending_seconds or 0),
                ),
                single(
                    "ledger_stuck_processing",
                    "Processing rows past their time limit (cleanup.stuck_tasks moves them).",
                    health.stuck_processing,
                ),
                single(
                    "ledger_lost_pending",
                    "Pending rows whose message is older than BACKGROUND_LOST_AFTER_SECONDS.",
                    health.lost_pending,
                ),
                single(
                    "ledger_undispatched", "Pending rows not yet published.", health.undispatched
                ),
                single(
                    "ledger_stale_pending",
                    "Pending rows older than ALERT_STUCK_JOBS_MINUTES (the stuck-jobs alert).",
                    stale,
                ),
            ]

            dead = readings.dead_letters(session)
            dead_rows = gauge("dead_letters", "Dead letters kept (messages no task could take).")
            dead_rows.add_metric([], dead.total)
            dead_latest = gauge(
                "dead_letters_latest_timestamp_seconds", "When the newest arrived (0: never)."
            )
            dead_latest.add_metric([], _ts(dead.latest_at))
            metrics += [dead_rows, dead_latest]

            listens = readings.estimated_shares(session, "listens", "enrichment_status")
            by_status = gauge(
                "enrichment_listens_estimated",
                "Imported listens by enrichment status: the planner's estimate (ANALYZE).",
                ["status"],
            )
            for status in LISTEN_STATUSES:
                by_status.add_metric([status], listens.get(status, 0))
            total = sum(listens.get(s, 0) for s in LISTEN_STATUSES)
            backlog = gauge("enrichment_backlog_estimated", "Listens waiting for enrichment.")
            backlog.add_metric([], listens.get("pending", 0))
            coverage = gauge(
                "enrichment_coverage_ratio", "Share of listens enriched (not pending), 0 to 1."
            )
            coverage.add_metric([], 1.0 if not total else 1 - listens.get("pending", 0) / total)
            progress = gauge(
                "enrichment_last_progress_timestamp_seconds",
                "The newest enriched listen (or the earliest connection waiting; 0: none).",
            )
            progress.add_metric([], _ts(readings.enrichment_last_progress(session)))
            metrics += [by_status, backlog, coverage, progress]

            metrics += self._schedule(session, now)
            metrics += self._workflows(session, now)
            metrics += self._ingest(session, now)
        yield from metrics

    def _schedule(self, session: Any, now: dt.datetime) -> list[Metric]:
        grace = dt.timedelta(seconds=self.ctx.settings.alert_schedule_grace_seconds)
        labels = ["entry", "task"]
        success = gauge(
            "schedule_last_success_timestamp_seconds",
            "The entry's newest successful run, within its last 100 fires (0: none).",
            labels,
        )
        fired = gauge(
            "schedule_last_fired_slot_timestamp_seconds",
            "The newest slot beat fired for the entry (0: never).",
            labels,
        )
        due = gauge(
            "schedule_due_slot_timestamp_seconds",
            "The newest slot the entry should have fired by now; above the last fired slot: "
            "beat missed it.",
            labels,
        )
        failing = gauge(
            "schedule_failed_runs_in_a_row",
            "The entry's newest finished runs that failed, in a row.",
            labels,
        )
        paused = gauge("schedule_paused", "1 if the entry is paused.", labels)
        for entry in readings.schedule_health(session, now, grace):
            key = [entry.entry, entry.task]
            success.add_metric(key, _ts(entry.last_success_at))
            fired.add_metric(key, _ts(entry.last_slot))
            due.add_metric(key, _ts(entry.due_slot or entry.last_slot))
            failing.add_metric(key, entry.failures_in_a_row)
            paused.add_metric(key, int(entry.paused))
        return [success, fired, due, failing, paused]

    def _workflows(self, session: Any, now: dt.datetime) -> list[Metric]:
        health = readings.workflow_health(session, now)
        executions = gauge(
            "workflow_executions", "Workflow executions still to do, by status.", ["status"]
        )
        executions.add_metric(["pending"], health.pending)
        executions.add_metric(["processing"], health.processing)
        return [
            executions,
            single(
                "workflow_executions_failed_24h",
                "Workflow executions of the last 24 h that failed (a retried one leaves).",
                health.failed_24h,
            ),
            single(
                "workflow_oldest_pending_age_seconds",
                "How long the longest-waiting due execution has waited (0: none); one held "
                "back by a retry's backoff or a debounce is not waiting.",
                _age(now, health.oldest_due_at),
            ),
            single(
                "workflow_unmatched_changes",
                "Job status changes the workflows' dispatcher has not matched yet.",
                health.unmatched,
            ),
            single(
                "workflow_unmatched_oldest_age_seconds",
                "Age of the oldest status change not matched yet (0: none); minutes mean no "
                "dispatcher runs (no worker consumes the workflows queue).",
                _age(now, health.oldest_unmatched_at),
            ),
        ]

    def _ingest(self, session: Any, now: dt.datetime) -> list[Metric]:
        minutes = self.ctx.settings.alert_ingest_queued_minutes
        health = readings.ingest_health(session, now, dt.timedelta(minutes=minutes))
        jobs = gauge(
            "ingest_jobs", "Ingest jobs queued, processing or failed, by status.", ["status"]
        )
        jobs.add_metric(["queued"], health.queued)
        jobs.add_metric(["processing"], health.processing)
        jobs.add_metric(["failed"], health.failed)
        # Done jobs are most of the table: the planner's count of it, less the exact rest.
        whole = readings.estimated_rows(session, "ingest_jobs")
        done = max(0, whole - health.queued - health.processing - health.failed)
        finished = gauge(
            "ingest_jobs_finished_1h",
            "Ingest jobs that finished in the last hour, by outcome (done, failed).",
            ["outcome"],
        )
        finished.add_metric(["done"], health.done_last_hour)
        finished.add_metric(["failed"], health.failed_last_hour)
        return [
            jobs,
            single(
                "ingest_done_jobs_estimated",
                "Done ingest jobs: an estimate (planner's table size, less the rest).",
                done,
            ),
            finished,
            single(
                "ingest_stale_queued",
                "Ingest jobs queued longer than ALERT_INGEST_QUEUED_MINUTES (the ingest-stuck "
                "alert).",
                health.stale_queued,
            ),
            single(
                "ingest_oldest_queued_age_seconds",
                "How long the oldest queued ingest job has waited (0: none).",
                _age(now, health.oldest_queued_at),
            ),
            single(
                "ingest_paused",
                "1 while ingest is paused: queued jobs wait (`automation ingest resume`).",
                int(health.paused),
            ),
        ]


def _age(now: dt.datetime, since: dt.datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


def render(ctx: Console) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AutomationCollector(ctx))
    return generate_latest(registry)


@router.get("/metrics", response_class=Response)
def metrics(ctx: ConsoleDep, _: Annotated[Principal, Depends(require("read"))]) -> Response:
    """Prometheus's text format; a viewer's (or admin's) bearer token."""
    return Response(render(ctx), media_type=CONTENT_TYPE_LATEST)
