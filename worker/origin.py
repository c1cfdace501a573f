"""Where a task run came from, for the workflows' loop guard.

A workflow's task action sends its task with the header ``workflow_origin``: the chain of
workflows that led to it. The run marks each of its database transactions with it (the
setting ``automation.origin``, local to the transaction), and the status trigger copies it
into every change the run makes. A change that comes back round to a workflow already in
its chain, or through too many, is then refused and logged instead of firing again.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.orm import Session, SessionTransaction

ORIGIN_HEADER = "workflow_origin"
_SET = text("SELECT set_config('automation.origin', :origin, :local)")


def origin_of(request: Any) -> str | None:
    """The origin a message carries, as the JSON the trigger stores; None if none (or not
    an object with a list ``chain``: a malformed header is ignored, not trusted)."""
    raw = getattr(request, ORIGIN_HEADER, None)
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    chain = value.get("chain") if isinstance(value, dict) else None
    if not isinstance(chain, list) or not all(isinstance(i, int) for i in chain):
        return None
    return json.dumps({"chain": chain})


def mark_session(session: Session, origin: str) -> None:
    """Every transaction ``session`` begins carries ``origin``."""

    def after_begin(_: Session, __: SessionTransaction, connection: Connection) -> None:
        connection.execute(_SET, {"origin": origin, "local": True})

    event.listen(session, "after_begin", after_begin)


def set_on_connection(connection: Any, origin: str | None) -> None:
    """For a psycopg connection used in autocommit (the ledger's claim): the setting for
    the whole connection until set again; '' clears it (the trigger reads '' as none)."""
    connection.execute("SELECT set_config('automation.origin', %s, false)", (origin or "",))
