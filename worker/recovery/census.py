"""Ledger rows whose message Redis no longer holds anywhere.

kombu's Redis transport takes a message with BRPOP and only afterwards records it as
unacknowledged; the reply may sit in a busy worker's socket for a while. A worker killed
in between takes the message with it, and nothing in Redis remembers it (seen here: one
row in a run of 400 with three SIGKILLs). The ledger still has the row, ``pending``, with its
message's id. The census finds such rows: published a while ago, still pending, and their
message id neither waiting in a queue nor held unacknowledged by any worker.

It reads whole queues, so it runs only while they are short (``CENSUS_MAX_MESSAGES``); in a
long backlog the rows would wait their turn anyway, and the ``BACKGROUND_LOST_AFTER_SECONDS``
rule still applies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import redis
from sqlalchemy.orm import Session

from worker.ledger.rescue import wake_dispatcher
from worker.ledger.task import SQL
from worker.queues import redis_keys

CENSUS_MAX_MESSAGES = 20_000
# A row published this recently may have its message in a worker's hands between BRPOP
# and its unacknowledged record (milliseconds): it is not judged yet.
CENSUS_GRACE_SECONDS = 30
UNACKED = "unacked"


def _task_id(payload: Any) -> str | None:
    try:
        headers = payload.get("headers") or {}
        return str(headers["id"]) if "id" in headers else None
    except (AttributeError, TypeError):
        return None


def message_ids(client: redis.Redis, queues: Iterable[str]) -> set[str] | None:
    """Task ids of every message waiting in ``queues`` or held unacknowledged, read in one
    transaction; None when the queues hold more than the census reads."""
    keys = [key for queue in queues for key in redis_keys(queue)]
    lengths = client.pipeline(transaction=False)
    for key in keys:
        lengths.llen(key)
    if sum(lengths.execute()) > CENSUS_MAX_MESSAGES:
        return None
    snapshot = client.pipeline(transaction=True)
    for key in keys:
        snapshot.lrange(key, 0, -1)
    snapshot.hvals(UNACKED)
    *waiting, held = snapshot.execute()
    ids: set[str] = set()
    # A malformed message is the consumer's to dead-letter, not the census's to count.
    unparsable = contextlib.suppress(ValueError, IndexError, TypeError, KeyError)
    for raw in (item for items in waiting for item in items):
        with unparsable:
            if (task_id := _task_id(json.loads(raw))) is not None:
                ids.add(task_id)
    for raw in held:
        with unparsable:
            if (task_id := _task_id(json.loads(raw)[0])) is not None:
                ids.add(task_id)
    return ids


def republish_unheld(
    session: Session, client: redis.Redis, queues: Iterable[str], now: dt.datetime
) -> int:
    """Fresh messages for pending rows whose message is nowhere in Redis; how many."""
    held = message_ids(client, queues)
    if held is None:
        return 0
    before = now - dt.timedelta(seconds=CENSUS_GRACE_SECONDS)
    republished = len(
        session.execute(SQL["republish_unheld"], {"held": sorted(held), "before": before}).all()
    )
    if republished:
        wake_dispatcher(session)
    return republished
