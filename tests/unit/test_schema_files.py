"""The database's functions and triggers live as files in ``db/triggers/``; these tests keep
those files and the NOTIFY channels the workers listen on in step, reading files only (the
migrated schema's snapshot is checked in the integration tier).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import db.triggers
from db import channels
from db.migrate import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
TRIGGER_FILES = sorted((ROOT / "db" / "triggers").glob("*.sql"))
_NOTIFY_CALL = re.compile(r"\bpg_notify\s*\(", re.IGNORECASE)
_NOTIFY_LITERAL = re.compile(r"\bpg_notify\s*\(\s*'([^']*)'", re.IGNORECASE)
_SQL_CALL = re.compile(r"""\bsql\(\s*["']([^"']+)["']\s*\)""")


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
