"""The code's default schedule: one entry per periodic job, reviewed in git.

Beat does not fire from this file but from the live schedule in PostgreSQL
(``schedule_entries``, ``worker/schedules/``), which operators change at run time
(``automation schedule ...``). At every beat start these defaults are reconciled into it:
a new default is added, a changed one applied again, a removed one deleted, but an entry
an operator edited is left as the operator made it (and logged). Times are in TIMEZONE.

Each entry: ``task`` (a public name; beat refuses to start with an unregistered one), a
``cron`` expression (minute hour day-of-month month day-of-week) or ``every`` (seconds),
optional ``kwargs``, and ``missed``, what happens to a slot that passed while beat was
down: ``run_once`` (it runs once when beat is back, however many slots passed) or
``skip`` (the entry waits for its next slot). The policy suits the job:

- daily and weekly jobs run once on recovery: a day without aggregation, playlists or
  retention would wait a whole day (or week) for the next slot;
- trending (6-hourly) and enrichment (hourly, a chain that restarts itself) too: their
  next slot is far enough for a stale ranking or a dead chain to matter;
- the minutely rescue and alert check skip: their next slot is a minute away, and a
  backlog of missed checks is one check.
"""

from __future__ import annotations

from typing import Any

SCHEDULE: dict[str, dict[str, Any]] = {
    "aggregate-listening-history": {
        "task": "listening.aggregate",
        "cron": "0 2 * * *",
        "missed": "run_once",
    },
    "generate-smart-playlists": {
        # Weekly types (discovery_weekly, forgotten_favorites) only on Mondays. Waits for
        # the day's aggregation to finish (tasks/playlists/tasks.py), however late it is.
        "task": "playlists.generate_all",
        "cron": "0 3 * * *",
        "missed": "run_once",
    },
    "delete-expired-playlists": {
        "task": "cleanup.expired_playlists",
        "cron": "0 5 * * *",
        "missed": "run_once",
    },
    "calculate-trending": {
        "task": "trending.calculate",
        "cron": "0 */6 * * *",
        "missed": "run_once",
    },
    "enrich-pending-listens": {
        # Continues itself while a backlog remains; this entry restarts a dead chain.
        "task": "enrichment.enrich_pending",
        "cron": "15 * * * *",
        "missed": "run_once",
    },
    "rescue-stuck-background-tasks": {
        # Rows and runs of workers that stopped renewing their lease: back within minutes.
        "task": "cleanup.stuck_tasks",
        "cron": "* * * * *",
        "missed": "skip",
    },
    "check-alerts": {
        # Opens and resolves incidents, posts them to ALERT_WEBHOOK_URL (tasks/monitoring/).
        "task": "monitoring.check_alerts",
        "cron": "* * * * *",
        "missed": "skip",
    },
    "delete-old-background-tasks": {
        "task": "cleanup.background_tasks",
        "cron": "0 4 * * sun",
        "missed": "run_once",
    },
    "delete-old-workflow-logs": {
        # Executions and matched status changes past WORKFLOW_LOG_RETENTION_DAYS.
        "task": "cleanup.workflow_logs",
        "cron": "45 4 * * *",
        "missed": "run_once",
    },
    "delete-old-task-runs": {
        # Run history and the schedule's fires past TASK_RUN_RETENTION_DAYS.
        "task": "cleanup.task_runs",
        "cron": "30 4 * * *",
        "missed": "run_once",
    },
}
