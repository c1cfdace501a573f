"""Failed sign-ins, counted in Redis per name and per address: past the limit, further
tries are refused until the window ends, so a password cannot be guessed at speed and an
address spraying tokens is shut out. Redis so that every console process shares the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

PREFIX = "automation:console:failures:"


@dataclass(frozen=True)
class Throttle:
    client: redis.Redis
    max_failures: int
    window_seconds: int

    def _keys(self, address: str | None, name: str | None) -> list[str]:
        keys = [] if address is None else [f"{PREFIX}addr:{address}"]
        return keys + ([] if name is None else [f"{PREFIX}name:{name}"])

    def locked_for(self, address: str | None, name: str | None = None) -> int:
        """Seconds until another try is heard; 0 when it is heard now."""
        keys = self._keys(address, name)
        if not keys:
            return 0
        pipe = self.client.pipeline()
        for key in keys:
            pipe.get(key)
            pipe.ttl(key)
        values = pipe.execute()
        waits = [
            max(int(ttl), 1)
            for count, ttl in zip(values[::2], values[1::2], strict=True)
            if count is not None and int(count) >= self.max_failures
        ]
        return max(waits, default=0)

    def failed(self, address: str | None, name: str | None = None) -> None:
        pipe = self.client.pipeline()
        for key in self._keys(address, name):
            # The window starts at the first failure: SET NX creates the key with its expiry
            # and leaves a running window alone (EXPIRE NX would need Redis 7; the embedded
            # Redis is 6.2). The pipeline is one MULTI, so the key never lacks its expiry.
            pipe.set(key, 0, ex=self.window_seconds, nx=True)
            pipe.incr(key)
        pipe.execute()

    def succeeded(self, name: str) -> None:
        self.client.delete(f"{PREFIX}name:{name}")
