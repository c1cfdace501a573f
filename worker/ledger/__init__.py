"""The ledger: a durable queue of per-track background tasks, kept in ``background_tasks``.

Redis only carries a message naming a row; a message acts only if it can claim its row, so
lost, doubled or redelivered messages never lose or double the work. Everything about it
lives in this package:

- ``task``: ``LedgerTask``, the base of every ledger task: claim, fencing token, completion
  in the work's own transaction;
- ``enqueue``: rows in and their messages out (``enqueue``, ``enqueue_many``), and the
  outbox source that publishes rows inserted by plain SQL;
- ``outbox``: the mechanism "a table fires work through NOTIFY and an outbox, drained by a
  dispatcher", with its explicit list of sources;
- ``rescue``: the lifeline, for rows whose worker died or whose message was lost;
- ``retention``: finished rows past their keep-time;
- ``tasks``: its retention task (``cleanup.background_tasks``; the rescue runs in
  ``worker.recovery``);
- ``ledger.sql``: its statements.

Importing this package does not build the Celery app; ``worker.ledger.tasks`` does.
"""

from worker.ledger.enqueue import dispatch_pending, enqueue, enqueue_many, redis_priority
from worker.ledger.task import (
    ClaimLostError,
    LedgerTask,
    UnknownTrackError,
    enqueue_row,
    ledger_task_name,
    ledger_tasks,
    limit_params,
    time_limits,
)

__all__ = [
    "ClaimLostError",
    "LedgerTask",
    "UnknownTrackError",
    "dispatch_pending",
    "enqueue",
    "enqueue_many",
    "enqueue_row",
    "ledger_task_name",
    "ledger_tasks",
    "limit_params",
    "redis_priority",
    "time_limits",
]
