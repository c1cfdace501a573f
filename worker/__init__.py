"""The Celery app (``celery -A worker ...``), its settings, queues, and operator CLI.

``worker.app`` is resolved on first use, not at import: importing ``worker.settings`` or
``worker.embedded`` must not read the configuration (tests set it up first).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
