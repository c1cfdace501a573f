"""Named SQL blocks, kept together: the queries that read better as SQL than as Core.

Each ``<family>.sql`` file holds blocks headed ``-- name: <block>``; ``queries(family)``
returns them as SQLAlchemy ``text()`` statements with ``:name`` parameters, and
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
def queries(family: str) -> dict[str, TextClause]:
    source = files(__package__).joinpath(f"{family}.sql").read_text()
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
