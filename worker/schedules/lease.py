"""The beat leader's lease and fencing token, kept in PostgreSQL (``beat_leader``).

Every beat process tries to hold the lease; the one that does fires. A lease is not a
fence on its own (a leader stalled by a long pause or a partition still believes it
leads when it wakes: redbeat#127, celery#2856), so the token goes up by one each time
the lease changes hands, and every fire names the token it was made under: the database
refuses a fire whose token is not the current one, or whose lease has run out
(``schedules.sql``: ``fire``). Expiry is by the database's clock.

Statements run in autocommit: a beat frozen between two statements holds no lock and no
open transaction that a follower would have to wait out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from db.queries import queries

log = logging.getLogger(__name__)
SQL = queries("worker.schedules", "schedules")


@dataclass
class Lease:
    engine: Engine  # AUTOCOMMIT
    holder: str
    seconds: float
    token: int | None = None
    # Monotonic time until which this process may believe it leads (its own view; the
    # database decides at each fire).
    held_until: float = 0.0

    @property
    def held(self) -> bool:
        return self.token is not None and time.monotonic() < self.held_until

    def hold(self) -> bool:
        """Renew our term or take a vacant one; whether we lead now."""
        started = time.monotonic()
        with self.engine.connect() as conn:
            token = conn.scalar(
                SQL["hold_lease"],
                {"holder": self.holder, "token": self.token, "lease": self.seconds},
            )
        if token is None:
            if self.token is not None:
                log.warning("beat %s: lost the leader lease (token %s)", self.holder, self.token)
            self.token = None
            return False
        if token != self.token:
            log.info("beat %s: leads now, fencing token %s", self.holder, token)
        self.token = int(token)
        # Counted from before the round trip: never believe the lease longer than it runs.
        self.held_until = started + self.seconds
        return True

    def step_down(self) -> None:
        self.token = None

    def release(self) -> None:
        """Hand the lease over now (a clean stop), so a follower need not wait it out."""
        if self.token is None:
            return
        with self.engine.connect() as conn:
            conn.execute(SQL["release_lease"], {"holder": self.holder, "token": self.token})
        self.token = None
