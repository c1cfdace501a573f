"""Where a task run came from, for the workflows' loop guard.

A workflow's task action sends its task with the header ``workflow_origin``: the chain of
workflows that led to it. The run's database connection carries it (the setting
``automation.origin``), and the status trigger copies it into every change the run makes.
A change that comes back round to a workflow already in its chain, or through too many,
is then refused and logged instead of firing again.

The setting is made on the connection before the run's first transaction and cleared
before the connection goes back to the pool, not as the first statement of each
transaction: a task may need that place for itself (``SET TRANSACTION ISOLATION LEVEL``
must come before any query; the listening aggregation's did, and failed).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Engine, text

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


def marked_connection(engine: Engine, origin: str) -> Connection:
    """A connection of ``engine`` carrying ``origin`` until ``release`` clears it."""
    connection = engine.connect()
    try:
        connection.execute(_SET, {"origin": origin, "local": False})
        connection.commit()
    except BaseException:
        connection.invalidate()
        connection.close()
        raise
    return connection


def release(connection: Connection) -> None:
    """Clear the origin and return the connection to the pool (a connection that cannot be
    cleared is discarded, never handed to a run without an origin)."""
    try:
        connection.rollback()
        connection.execute(_SET, {"origin": "", "local": False})
        connection.commit()
    except Exception:
        connection.invalidate()
    finally:
        connection.close()


def set_on_connection(connection: Any, origin: str | None) -> None:
    """For a psycopg connection used in autocommit (the ledger's claim): the setting for
    the whole connection until set again; '' clears it (the trigger reads '' as none)."""
    connection.execute("SELECT set_config('automation.origin', %s, false)", (origin or "",))
