"""Apply migrations and tell whether a database is at the code's schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaBehindError(Exception):
    """The database is not at the migrations' head: refuse to run against it."""


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        # '%' is Alembic's interpolation character; a password may contain it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def ensure_current(engine: Engine) -> None:
    """Raise SchemaBehindError (one line, with the fix) unless the schema is at head."""
    current, heads = current_revisions(engine), head_revisions()
    if current != heads:
        have = ", ".join(sorted(current)) or "empty"
        want = ", ".join(sorted(heads))
        raise SchemaBehindError(
            f"database schema is at {have}, this code needs {want}: run `automation db upgrade`"
        )
