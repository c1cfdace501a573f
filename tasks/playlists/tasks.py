"""The playlists family's tasks: ``playlists.generate``, ``generate_all``, ``generate_chunk``,
``add_up``, and ``cleanup.expired_playlists``. The work is in
``tasks.playlists.generation`` and ``tasks.playlists.expiry``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any
from zoneinfo import ZoneInfo

from celery import chord
from sqlalchemy import text

from tasks.playlists.expiry import delete_expired_playlists
from tasks.playlists.generation import (
    add_up,
    aggregation_pending,
    check_kind,
    chunk_ranges,
    generate_playlists,
    kinds_due,
)
from worker.arguments import AwareIsoDatetime, ChunkResults, Id, PlaylistKinds, PlaylistType
from worker.base_task import AutomationTask
from worker.celery_app import app
from worker.errors import PermanentError
from worker.settings import get_settings

log = logging.getLogger(__name__)
# How often a generate_all waiting for the day's aggregation looks again.
AGGREGATION_POLL_SECONDS = 30


@app.task(name="playlists.generate", bind=True)
def generate(self: AutomationTask, user_id: Id, playlist_type: PlaylistType) -> dict[str, int]:
    check_kind(playlist_type)
    if not self.session.scalar(text("SELECT 1 FROM users WHERE id = :id"), {"id": user_id}):
        raise PermanentError(f"no user with id {user_id}")
    return generate_playlists(
        self.session, [playlist_type], dt.datetime.now(dt.UTC), user_id=user_id
    )


@app.task(name="playlists.generate_chunk", bind=True)
def generate_chunk(
    self: AutomationTask, lo: Id, hi: Id, kinds: PlaylistKinds, now: AwareIsoDatetime
) -> dict[str, int]:
    return generate_playlists(self.session, kinds, dt.datetime.fromisoformat(now), lo=lo, hi=hi)


@app.task(name="playlists.add_up", bind=True)
def add_up_chunks(self: AutomationTask, results: ChunkResults) -> dict[str, int]:
    return add_up(results)


@app.task(name="playlists.generate_all", bind=True)
def generate_all(
    self: AutomationTask, playlist_type: PlaylistType | None = None, force: bool = False
) -> Any:
    now = dt.datetime.now(dt.UTC)
    settings = get_settings()
    # Whichever of the two fires first, the playlists start after the day's aggregation:
    # this run defers itself until it has finished, however late, up to a bound.
    waiting = aggregation_pending(self.session, now, settings.timezone)
    if waiting is not None:
        if (
            self.deferrals * AGGREGATION_POLL_SECONDS
            < settings.playlists_wait_for_aggregation_seconds
        ):
            raise self.defer(waiting, countdown=AGGREGATION_POLL_SECONDS)
        log.warning(
            "%s for %d s already (PLAYLISTS_WAIT_FOR_AGGREGATION_SECONDS): building on "
            "the stats as they are",
            waiting,
            settings.playlists_wait_for_aggregation_seconds,
        )
    today = now.astimezone(ZoneInfo(settings.timezone)).date()
    kinds = kinds_due(playlist_type, today, force)
    ranges = chunk_ranges(self.session, now) if kinds else []
    if not ranges:
        return {name: 0 for name in kinds}
    fan_out = chord(
        (generate_chunk.si(lo, hi, kinds, now.isoformat()) for lo, hi in ranges),
        add_up_chunks.s(),
    )
    # The chord takes this task's place: the caller's result is the chord's sum.
    return self.replace(fan_out)


@app.task(name="cleanup.expired_playlists", bind=True)
def expired_playlists(self: AutomationTask) -> dict[str, int]:
    return {"deleted": delete_expired_playlists(self.session, dt.datetime.now(dt.UTC))}
