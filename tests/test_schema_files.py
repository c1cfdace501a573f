"""The database's functions and triggers live as files in ``db/triggers/``; these tests keep
those files, the NOTIFY channels the workers listen on, and the migrated schema in step.

The schema snapshot (``tests/schema_snapshot.txt``) is what a freshly migrated database's
catalog holds: functions, triggers, tables, columns, constraints and indexes. A database
migrated by an older checkout and one migrated by this one must agree, so any change to it
shows up as a diff to review. Regenerating it is a deliberate act (see ``SNAPSHOT_HINT``).
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

import db.triggers
from db import channels
from db.migrate import MIGRATIONS, upgrade

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).with_name("schema_snapshot.txt")
TRIGGER_FILES = sorted((ROOT / "db" / "triggers").glob("*.sql"))
SNAPSHOT_HINT = (
    "If this schema change is deliberate, regenerate the snapshot and review its diff: "
    "TEST_DATABASE_URL=postgresql+psycopg://... python -m tests.test_schema_files "
    "> tests/schema_snapshot.txt"
)

_NOTIFY_CALL = re.compile(r"\bpg_notify\s*\(", re.IGNORECASE)
_NOTIFY_LITERAL = re.compile(r"\bpg_notify\s*\(\s*'([^']*)'", re.IGNORECASE)
_SQL_CALL = re.compile(r"""\bsql\(\s*["']([^"']+)["']\s*\)""")

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


def _normalise(definition: str) -> list[str]:
    # PostgreSQL keeps a function's body as written: its indentation says nothing about
    # what the function does, so moving a body between files must not show up as a change.
    return [line.strip() for line in definition.splitlines() if line.strip()]


def schema_snapshot(conn: Connection) -> str:
    """The public schema's catalog as sorted text, one entry per object."""
    entries: list[str] = []
    for kind, query in _CATALOG.items():
        for key, definition in conn.execute(text(query)):
            lines = _normalise(definition)
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


def _notified_channels() -> set[str]:
    return {
        channel for path in TRIGGER_FILES for channel in _NOTIFY_LITERAL.findall(path.read_text())
    }


def test_every_pg_notify_in_a_trigger_file_names_its_channel_as_a_literal() -> None:
    # A computed channel name would slip past the two channel checks below.
    for path in TRIGGER_FILES:
        source = path.read_text()
        calls, literals = _NOTIFY_CALL.findall(source), _NOTIFY_LITERAL.findall(source)
        assert len(calls) == len(literals), f"{path.name}: pg_notify with a computed channel"


def test_every_channel_a_trigger_notifies_is_declared_in_db_channels() -> None:
    assert TRIGGER_FILES
    undeclared = _notified_channels() - channels.ALL
    assert not undeclared, f"channels notified but not in db.channels.ALL: {undeclared}"


def test_every_declared_channel_is_notified_by_some_trigger_file() -> None:
    unnotified = channels.ALL - _notified_channels()
    assert not unnotified, f"channels in db.channels.ALL that no trigger notifies: {unnotified}"


def test_every_trigger_file_starts_with_a_comment_saying_why_it_exists() -> None:
    for path in TRIGGER_FILES:
        assert path.read_text().startswith("-- "), path.name


def test_every_trigger_file_is_loaded_by_a_migration() -> None:
    loaded = {
        name
        for migration in (MIGRATIONS / "versions").glob("*.py")
        for name in _SQL_CALL.findall(migration.read_text())
    }
    assert {path.stem for path in TRIGGER_FILES} == loaded


def test_the_loader_returns_a_trigger_file_text() -> None:
    for path in TRIGGER_FILES:
        assert db.triggers.sql(path.stem) == path.read_text()


def test_an_unknown_trigger_file_name_is_refused_with_the_known_names() -> None:
    known = TRIGGER_FILES[0].stem
    with pytest.raises(LookupError, match=rf"no_such_trigger.*{known}"):
        db.triggers.sql("no_such_trigger")
    with pytest.raises(LookupError):
        db.triggers.sql(f"../triggers/{known}")


def test_the_trigger_files_are_installed_with_the_package(tmp_path: Path) -> None:
    # Built by setuptools itself, so the check holds however pyproject.toml spells it; the
    # egg-info goes to tmp_path too, leaving the source tree untouched.
    build = tmp_path / "lib"
    setup = "import sys; from setuptools import setup; sys.argv[0] = 'setup.py'; setup()"
    commands = ["egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(build)]
    subprocess.run(
        [sys.executable, "-c", setup, "-q", *commands],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    installed = sorted(path.name for path in (build / "db" / "triggers").glob("*.sql"))
    assert installed == [path.name for path in TRIGGER_FILES]


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
