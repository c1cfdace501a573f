"""The chaos scenarios' work, on the production app (``celery -A bench.chaos_tasks worker``).

``chaos.work`` is a ledger task whose body records that it was applied, in its own
transaction (``chaos_effects``, a table the scenario makes, with no unique key): a row
applied twice would show as two effects. ``chaos.echo`` is a plain task sent by name, as
another service would. ``chaos.spotify`` asks the Spotify stand-in through the
enrichment's own client (the shared limiter, the shared pause after a 429, the shared app
token) and records its call once. Both take a few milliseconds (``CHAOS_WORK_SECONDS``), so a fault
finds work in flight. The ``chaos`` family is unknown to the routing, so both live on the
default queue, with its workers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import text

from tasks.enrichment.spotify import SpotifyCatalog
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.ledger import LedgerTask
from worker.redis_client import get_redis
from worker.settings import get_settings

__all__ = ["app"]

# Read once, at import, like the settings: a knob of the scenario, not of the product.
WORK_SECONDS = float(os.environ.get("CHAOS_WORK_SECONDS", "0.02"))


@app.task(name="chaos.work", bind=True, base=LedgerTask)
def work(self: LedgerTask, track_id: int, background_task_id: int | None = None) -> dict[str, Any]:
    time.sleep(WORK_SECONDS)
    self.session.execute(
        text("INSERT INTO chaos_effects (background_task_id) VALUES (:id)"),
        {"id": background_task_id},
    )
    return {"applied": background_task_id}


@app.task(name="chaos.echo", bind=True)
def echo(self: AutomationTask, n: int) -> int:
    time.sleep(WORK_SECONDS)
    self.session.execute(text("INSERT INTO chaos_echoes (n) VALUES (:n)"), {"n": n})
    return n


@app.task(name="chaos.spotify", bind=True)
def spotify(self: AutomationTask, n: int, searches: int) -> int:
    catalog = SpotifyCatalog(get_settings(), get_redis())
    for i in range(searches):
        catalog.search_tracks(f"track:chaos{n}x{i}")
    self.session.execute(
        text("INSERT INTO chaos_calls (n) VALUES (:n) ON CONFLICT DO NOTHING"), {"n": n}
    )
    return n
