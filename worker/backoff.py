"""Retry delays: how long a job waits before its next attempt, and how a broker keeps it.

Shared by the pipelines that retry their own jobs (workflow executions, media ingest) and
by the base task's transient retries, so every retry in the system backs off the same way.
"""

from __future__ import annotations

import math


def backoff(attempt: int, base: float, cap: float, draw: float) -> float:
    """Seconds before the retry after attempt number ``attempt`` (1 first): base, 2 base,
    4 base... up to ``cap``, each drawn from its upper half (``draw`` in [0, 1)): jitter
    without the near-zero waits of full jitter."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 30))
    return ceiling / 2 + draw * ceiling / 2


def whole_seconds(seconds: float) -> int | None:
    """A countdown as a broker can keep it: whole seconds, rounded up, or none. RabbitMQ's
    delayed delivery (Celery's native one) takes whole seconds and refuses one under a
    second; rounding up means a message never comes before its job is due (one that did
    would only wait again)."""
    return math.ceil(seconds) if seconds > 0 else None
