"""One request-rate limit for Spotify's Web API, shared through Redis by every worker.

Celery's own ``rate_limit`` is enforced per worker instance, so ten workers each allowed
N requests would send 10N. Spotify counts
requests over a rolling 30-second window, so every process on every host takes its
admissions from one log in Redis: a sliding-window log, a sorted set of admission times.
Unlike a fixed window (which lets 2N through across a boundary) or a token bucket (which
allows bursts above N per window), the log is exact: no half-open window of
``window_seconds`` ever holds more than ``limit`` admissions.

Admission is decided by one Lua script, so trimming, counting and adding happen
atomically, and it stamps admissions with the Redis server's clock (``TIME``), not the
caller's: hosts whose clocks disagree by a second would otherwise each see a different
window, and the limit would hold only on the host with the slowest clock.

A 429 answer pauses everyone: its Retry-After is stored as the TTL of a second key, which
the same script checks before admitting anything. A pause only ever extends: 429s arrive
out of order from many workers, and a short Retry-After (a burst limit) landing after a long
one (a daily quota) must not cut the long one short.

Memory is bounded: the log holds at most ``limit`` members (older ones are trimmed on
every call) and expires a window after the last admission; the pause key expires with the
pause. Every user of one name must agree on ``limit`` and ``window_seconds``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

RATE_LIMIT_REASON = "rate limit"

# KEYS: log, pause. ARGV: limit, window (µs), key TTL (ms), unique member suffix.
# Returns {0, false} when admitted, else {ms to wait (>= 1), pause reason or false}.
_ACQUIRE = """
local reason = redis.call('GET', KEYS[2])
if reason then
    local remaining = redis.call('PTTL', KEYS[2])
    if remaining > 0 then
        return {remaining, reason}
    end
end

local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- If the server clock stepped back, admissions stamped "in the future" would hold the log
-- full until the clock caught up again (minutes, for a large step). Re-stamping them at
-- now keeps their count and only moves them later, which is stricter, never looser.
local future = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%.0f', now), '+inf')
for _, member in ipairs(future) do
    redis.call('ZADD', KEYS[1], now, member)
end

-- Half-open windows: an admission exactly one window ago no longer counts.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
if redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now, t[1] .. '.' .. t[2] .. '-' .. ARGV[4])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {0, false}
end

local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return {math.max(1, math.ceil((oldest + window - now) / 1000)), false}
"""

# KEYS: pause. ARGV: pause (ms), reason. Replaces the pause only if it would end later.
_PAUSE = """
if redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Wait:
    """How long until a request may go, and why: ``"rate limit"`` or a pause's reason."""

    seconds: float
    reason: str


# The name is the agreed interface the Spotify tasks import, hence no "Error" suffix.
class RateLimitWaitTooLong(Exception):  # noqa: N818
    """The next admission is further away than the caller is willing to sleep."""

    def __init__(self, wait: Wait) -> None:
        super().__init__(f"next request allowed in {wait.seconds:.3f} s ({wait.reason})")
        self.wait = wait


def _text(value: bytes | str) -> str:
    # The client may or may not have been built with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


class SharedRateLimiter:
    """At most ``limit`` requests per ``window_seconds`` across every process using ``name``."""

    def __init__(self, client: redis.Redis, name: str, limit: int, window_seconds: float) -> None:
        if not name:
            raise ValueError("name must not be empty")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not (math.isfinite(window_seconds) and window_seconds > 0):
            raise ValueError(f"window_seconds must be a positive number, got {window_seconds}")
        self.client = client
        self.name = name
        self.limit = limit
        self.window_seconds = window_seconds
        self.key = f"ratelimit:{name}"
        self.pause_key = f"ratelimit:{name}:paused"
        self._window_us = max(1, math.ceil(window_seconds * 1_000_000))
        self._window_ms = max(1, math.ceil(window_seconds * 1000))
        self._acquire = client.register_script(_ACQUIRE)
        self._pause = client.register_script(_PAUSE)

    def try_acquire(self) -> Wait | None:
        """Admit one request now (None), or say how long until one could be admitted."""
        wait_ms, reason = self._acquire(
            keys=[self.key, self.pause_key],
            args=[self.limit, self._window_us, self._window_ms, uuid.uuid4().hex],
        )
        if wait_ms == 0:
            return None
        return Wait(int(wait_ms) / 1000, RATE_LIMIT_REASON if reason is None else _text(reason))

    def acquire(self, max_wait: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Admit one request, sleeping for waits of up to ``max_wait`` seconds each.

        A longer wait raises RateLimitWaitTooLong at once, so a task can end its batch and
        reschedule itself instead of holding a worker slot while it sleeps.
        """
        if not max_wait >= 0:
            raise ValueError(f"max_wait must be a non-negative number, got {max_wait}")
        while True:
            wait = self.try_acquire()
            if wait is None:
                return
            if wait.seconds > max_wait:
                raise RateLimitWaitTooLong(wait)
            # Other processes wake at the same moment; a loser gets a fresh wait and loops.
            sleep(wait.seconds)

    def pause(self, seconds: float, reason: str) -> None:
        """Stop every admission for ``seconds`` (e.g. a 429's Retry-After); never shortens."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a non-negative number, got {seconds}")
        milliseconds = math.ceil(seconds * 1000)
        if milliseconds == 0:
            return
        self._pause(keys=[self.pause_key], args=[milliseconds, reason])

    def paused(self) -> Wait | None:
        """The pause in force, if any, with its remaining time."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.pause_key)
        pipe.pttl(self.pause_key)
        results: list[Any] = pipe.execute()
        reason, remaining_ms = results
        if reason is None or remaining_ms <= 0:
            return None
        return Wait(remaining_ms / 1000, _text(reason))

    def clear(self) -> None:
        """Forget every admission and any pause."""
        self.client.delete(self.key, self.pause_key)
