"""The migrated schema is kept in step with a committed snapshot of it.

The schema snapshot (``tests/schema_snapshot.txt``) is what a freshly migrated database's
catalog holds: functions, triggers, tables, columns, constraints and indexes. A database
migrated by an older checkout and one migrated by this one must agree, so any change to it
shows up as a diff to review. Regenerating it is a deliberate act (see ``SNAPSHOT_HINT``).
"""

from __future__ import annotations

import difflib
import os
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from db.migrate import upgrade

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent

SNAPSHOT = Path(__file__).resolve().parents[1] / "schema_snapshot.txt"
SNAPSHOT_HINT = (
    "If this schema change is deliberate, regenerate the snapshot and review its diff: "
    "TEST_DATABASE_URL=postgresql+psycopg://... python -m tests.integration.test_schema_files "
    "> tests/schema_snapshot.txt"
)

# Each query yields (key, definition) rows; a row becomes one snapshot entry.
_CATALOG: dict[str, str] = {
    "table": """
        SELECT c.relname, coalesce(array_to_string(c.reloptions, ', '), '')
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
    """,
    "column": """
        SELECT c.relname || '.' || a.attname,
               concat_ws(' ',
                   format_type(a.atttypid, a.atttypmod),
                   CASE WHEN a.attnotnull THEN 'NOT NULL' END,
                   'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid),
                   CASE a.attidentity WHEN 'a' THEN 'IDENTITY ALWAYS'
                                      WHEN 'd' THEN 'IDENTITY BY DEFAULT' END,
                   CASE WHEN a.attgenerated = 's' THEN 'GENERATED STORED' END)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraint": """
        SELECT coalesce(c.relname, '-') || '.' || k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint k
        LEFT JOIN pg_class c ON c.oid = k.conrelid
        WHERE k.connamespace = 'public'::regnamespace
          -- PostgreSQL 18 also keeps each NOT NULL as a constraint; the column lines say
          -- it already, and the snapshot must not depend on the server's version (the
          -- embedded server is 18, the machine's 15).
          AND k.contype <> 'n'
    """,
    "index": """
        SELECT tablename || '.' || indexname, indexdef
        FROM pg_indexes WHERE schemaname = 'public'
    """,
    "function": """
        SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_functiondef(p.oid)
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
    """,
    "trigger": """
        SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
    """,
}


def _lines(definition: str) -> list[str]:
    # Exactly as stored, indentation included: PostgreSQL keeps a function's body verbatim,
    # so a body re-indented in its file is a different schema, and the snapshot says so.
    return [line.rstrip() for line in definition.splitlines()]


def schema_snapshot(conn: Connection) -> str:
    """The public schema's catalog as sorted text, one entry per object."""
    entries: list[str] = []
    for kind, query in _CATALOG.items():
        for key, definition in conn.execute(text(query)):
            lines = _lines(definition)
            if len(lines) <= 1:
                entries.append(f"{kind} {key}: {''.join(lines)}".rstrip())
            else:
                entries.append("\n".join([f"{kind} {key}:", *(f"    {line}" for line in lines)]))
    return "\n".join(sorted(entries)) + "\n"


def migrated_snapshot(database_url: str) -> str:
    """Migrate the (empty) database at ``database_url`` to head and snapshot its schema."""
    upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return schema_snapshot(conn)
    finally:
        engine.dispose()


def test_a_freshly_migrated_schema_matches_the_committed_snapshot(
    empty_database_url: str,
) -> None:
    actual = migrated_snapshot(empty_database_url)
    expected = SNAPSHOT.read_text()
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile="tests/schema_snapshot.txt (committed)",
                tofile="freshly migrated database",
            )
        )
        pytest.fail(f"the migrated schema differs from the snapshot:\n{diff}\n{SNAPSHOT_HINT}")


def _print_fresh_snapshot() -> None:
    """Print the snapshot of a scratch database on TEST_DATABASE_URL's server, migrated to
    head; the scratch database is dropped afterwards."""
    server_url = os.environ.get("TEST_DATABASE_URL")
    if not server_url:
        sys.exit("set TEST_DATABASE_URL to a PostgreSQL server this may create a database on")
    name = f"automation_snapshot_{uuid.uuid4().hex[:8]}"
    admin = make_url(server_url).set(drivername="postgresql")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        database_url = make_url(server_url).set(database=name)
        sys.stdout.write(migrated_snapshot(database_url.render_as_string(hide_password=False)))
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    _print_fresh_snapshot()
