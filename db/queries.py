"""Named SQL blocks, kept together: the queries that read better as SQL than as Core.

A family keeps its ``<name>.sql`` file beside its code; the file holds blocks headed
``-- name: <block>``. ``queries(package, name)`` returns them as SQLAlchemy ``text()``
statements with ``:name`` parameters, and
``driver_sql`` one of them in psycopg's own placeholder style, for the rare hot path that
runs it on the driver connection.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib.resources import files
from typing import Any, cast

from sqlalchemy import CursorResult, TextClause, text
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.orm import Session

_HEADER = re.compile(r"^-- name: (\S+)[ \t]*$", re.MULTILINE)


@functools.cache
def queries(package: str, name: str) -> dict[str, TextClause]:
    """The blocks of ``<name>.sql`` in ``package``: ``queries("tasks.trending", "trending")``."""
    source = files(package).joinpath(f"{name}.sql").read_text()
    parts = _HEADER.split(source)
    return {name: text(body.strip()) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def driver_sql(statement: TextClause) -> str:
    """``statement`` with psycopg's ``%(name)s`` placeholders."""
    dialect: Any = psycopg_dialect.dialect  # untyped constructor
    return str(statement.compile(dialect=dialect()))


def execute_counted(session: Session, statement: TextClause, params: Mapping[str, Any]) -> int:
    """Run a data-changing statement; return how many rows it wrote."""
    result = session.execute(statement, params)
    return int(cast(CursorResult[Any], result).rowcount)


def delete_in_batches(
    session: Session, statement: TextClause, params: Mapping[str, Any], *, batch: int
) -> int:
    """Run a ``LIMIT :batch`` delete until it deletes less than a batch, committing each.

    A long retention backlog never becomes one long transaction holding many row locks.
    Returns how many rows went.
    """
    deleted = 0
    while True:
        count = execute_counted(session, statement, {**params, "batch": batch})
        session.commit()
        deleted += count
        if count < batch:
            return deleted
