"""How enrichment runs are scheduled: the pending chain, uploads, and the outbox source.

- ``enrichment.enrich_pending(batch_size)``: hourly from beat. While a backlog remains it
  continues itself, run after run, instead of waiting for the next hour; after a long
  429 it continues when the pause ends. One chain at a time: the running link holds a
  baton in Redis and hands it to the next link it publishes, so beat's hourly run finds
  it held and steps aside. A chain that died (its worker killed) lets the baton expire,
  and the next hourly run takes over.
- ``enrichment.enrich_upload(upload_id)``: published by the enrichment workers'
  dispatcher as soon as an upload becomes completed, however that happened (a trigger
  NOTIFYs it: db/triggers/upload_jobs_notify_completed.sql). It works on that upload's
  songs only, beside the chain; claims keep the two from asking about the same song.
- ``enrichment.progress(user_id=None)``: how far enrichment is, overall or for one user.

A stall is alerted on by the minutely alert check (``tasks.monitoring.alerts``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import redis
from celery import Celery
from sqlalchemy.orm import Session

from db import channels
from db.queries import queries
from db.session import session_scope
from tasks.enrichment.accounts import spotipy_refresher
from tasks.enrichment.enrich import Accounts, EnrichmentReport, enrich
from tasks.enrichment.spotify import SpotifyCatalog
from worker.errors import PermanentError
from worker.ledger.outbox import Source
from worker.publishing import publish_after_commit
from worker.queues import family_of, home_queue
from worker.redis_client import get_redis
from worker.secrets import SecretCipher
from worker.settings import Settings

log = logging.getLogger(__name__)

SQL = queries("tasks.enrichment", "enrichment")
FAMILY = family_of("enrichment.enrich_pending")
# A run stops asking with time to spare before the soft time limit.
RUN_BUDGET_SECONDS = FAMILY.soft_time_limit - 120
# A claimed key is held at most as long as a run can live.
LEASE_SECONDS = FAMILY.time_limit
# A continuation waits at most this long on the broker; a longer pause is re-checked
# then. A far-future ETA does not belong in Redis: the worker holds the message unacked
# until it is due, and past the visibility timeout Redis hands it to another worker.
MAX_COUNTDOWN_SECONDS = 3600
BATON_KEY = "enrichment:pending:baton"


class UnknownUploadError(PermanentError):
    pass


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the chain's baton -------------------------------------------------------------------

_TAKE_OR_KEEP = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
_HAND_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    if ARGV[2] == '' then
        redis.call('DEL', KEYS[1])
    else
        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    end
    return 1
end
return 0
"""


class Baton:
    """Who may run the enrich_pending chain now: a lease in Redis, passed link to link."""

    def __init__(self, client: redis.Redis, key: str = BATON_KEY) -> None:
        self._take = client.register_script(_TAKE_OR_KEEP)
        self._pass = client.register_script(_HAND_OVER)
        self.key = key

    def take(self, holder: str, ttl_seconds: float) -> bool:
        return bool(self._take(keys=[self.key], args=[holder, int(ttl_seconds * 1000)]))

    def hand_over(self, holder: str, successor: str, ttl_seconds: float) -> bool:
        return bool(self._pass(keys=[self.key], args=[holder, successor, int(ttl_seconds * 1000)]))

    def release(self, holder: str) -> bool:
        return bool(self._pass(keys=[self.key], args=[holder, "", 0]))


# -- building a run -------------------------------------------------------------------------


def run_enrichment(
    session: Session, settings: Settings, *, upload_id: int | None, batch_size: int
) -> EnrichmentReport:
    catalog = SpotifyCatalog(settings, get_redis())
    accounts = Accounts(
        cipher_factory=lambda: SecretCipher.from_settings(settings),
        refresher=spotipy_refresher(settings),
    )
    return enrich(
        session,
        catalog,
        utc_now,
        settings,
        accounts=accounts,
        upload_id=upload_id,
        batch_size=batch_size,
        budget_seconds=RUN_BUDGET_SECONDS,
        lease_seconds=LEASE_SECONDS,
    )


def not_configured(settings: Settings) -> dict[str, Any] | None:
    """A skip, when no Spotify app is configured: an optional integration, not an error."""
    if settings.spotify_configured:
        return None
    log.warning("Spotify enrichment skipped: SPOTIFY_CLIENT_ID / SPOTIFY_CLIENT_SECRET unset")
    return {"status": "skipped", "reason": "Spotify is not configured (SPOTIFY_CLIENT_ID)"}


def countdown(report: EnrichmentReport) -> float:
    # Whole seconds: Celery's delayed delivery on RabbitMQ counts in seconds and refuses a
    # countdown under one (0.4 s would fail the send).
    return float(min(math.ceil(report.resume_in or 0.0), MAX_COUNTDOWN_SECONDS))


# -- the outbox source: completed uploads ---------------------------------------------------


def dispatch_completed_uploads(celery_app: Celery, *, limit: int = 100) -> int:
    """Publish enrich_upload for every completed upload that has not had one."""
    published = 0
    while True:
        with session_scope() as session:
            ids = list(session.scalars(SQL["take_completed_uploads"], {"limit": limit}))
            for upload_id in ids:
                publish_after_commit(
                    session, celery_app.signature("enrichment.enrich_upload", args=(upload_id,))
                )
        published += len(ids)
        if len(ids) < limit:
            return published


# Completed uploads, as the outbox dispatcher serves them (the trigger on upload_jobs
# notifies the channel when one completes).
UPLOADS_SOURCE = Source(
    channels.UPLOAD_JOBS_COMPLETED,
    queues=lambda _app: {home_queue("enrichment.enrich_upload")},
    dispatch=dispatch_completed_uploads,
)
