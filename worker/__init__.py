"""The Celery app (``celery -A worker ...``), its settings, queues, and operator CLI."""

from worker.app import app

__all__ = ["app"]
