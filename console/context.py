"""What every request of the console shares: the settings, the Celery app it sends with,
a Redis client, the sign-in throttle. Built once at start-up, closed at shut-down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from console.throttle import Throttle
from worker.settings import Settings


@dataclass(frozen=True)
class Console:
    settings: Settings
    celery: Any  # celery.Celery (untyped)
    redis: redis.Redis
    throttle: Throttle

    @classmethod
    def build(cls, settings: Settings, celery_app: Any) -> Console:
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=3, socket_timeout=5
        )
        return cls(
            settings=settings,
            celery=celery_app,
            redis=client,
            throttle=Throttle(
                client, settings.api_login_max_failures, settings.api_login_lockout_seconds
            ),
        )

    def close(self) -> None:
        self.redis.close()
