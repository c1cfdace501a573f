"""The whole periodic schedule: one entry per public task name, times in TIMEZONE.

Each entry is added by the change that registers its task; beat refuses to start if an
entry names a task that is not registered, so a typo never becomes a silent no-op. The
schedule:

    listening.aggregate        daily 02:00
    playlists.generate_all     daily 03:00
    trending.calculate         every 6 hours
    cleanup.background_tasks   Sundays 04:00
    cleanup.expired_playlists  daily 05:00
    enrichment.enrich_pending  hourly
    cleanup.stuck_tasks        every minute

and one of ours: ``cleanup.task_runs`` (run-history retention) daily at 04:30.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

SCHEDULE: dict[str, dict[str, Any]] = {
    "aggregate-listening-history": {
        "task": "listening.aggregate",
        "schedule": crontab(hour=2, minute=0),
    },
    "generate-smart-playlists": {
        # Weekly types (discovery_weekly, forgotten_favorites) only on Mondays.
        "task": "playlists.generate_all",
        "schedule": crontab(hour=3, minute=0),
    },
    "delete-expired-playlists": {
        "task": "cleanup.expired_playlists",
        "schedule": crontab(hour=5, minute=0),
    },
    "calculate-trending": {
        "task": "trending.calculate",
        "schedule": crontab(hour="*/6", minute=0),
    },
    "enrich-pending-listens": {
        # Continues itself while a backlog remains; this entry restarts a dead chain.
        "task": "enrichment.enrich_pending",
        "schedule": crontab(minute=15),
    },
    "rescue-stuck-background-tasks": {
        # Rows and runs of workers that stopped renewing their lease: back within minutes.
        "task": "cleanup.stuck_tasks",
        "schedule": crontab(),
    },
    "delete-old-background-tasks": {
        "task": "cleanup.background_tasks",
        "schedule": crontab(hour=4, minute=0, day_of_week="sunday"),
    },
    "delete-old-task-runs": {
        "task": "cleanup.task_runs",
        "schedule": crontab(hour=4, minute=30),
    },
}
