"""The process's Redis client for our own keys (limits, locks, shared tokens).

Celery's broker connection is Celery's; this one is ours. redis-py's pool notices a fork
and opens fresh connections in the child, so one cached client per process is safe.
"""

from __future__ import annotations

import functools

import redis

from worker.settings import get_settings


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(
        get_settings().redis_url, socket_connect_timeout=5, socket_timeout=10
    )
