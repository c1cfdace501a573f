"""The database's own functions and triggers, one ``<name>.sql`` file each, that migrations
create with ``op.execute(sql("<name>"))``.

Each file starts with a comment saying what work its trigger fires, so the trigger that
queues track analysis, say, is found here rather than in a migration's string.

A migration is history: once a migration that loads a file has been applied anywhere, that
file must keep its meaning, or databases migrated before and after the edit would differ
with nothing to tell them apart. A later change to a function or trigger is a new file
(``<name>_v2.sql``) loaded by a new migration; a test compares a freshly migrated
database with a committed snapshot of the catalog and catches an edit in place.

Function bodies keep, byte for byte, the indentation the migrations' strings gave them
before the functions moved here: PostgreSQL stores a body verbatim, so re-indenting one
would change what every database migrated since holds.

``op.execute`` reads a plain string as SQLAlchemy ``text()``, where a colon followed by a
word is a bind parameter: write casts as ``::type`` and keep ``:word`` out of comments.
"""

from __future__ import annotations

import re
from importlib.resources import files

_NAME = re.compile(r"[a-z0-9_]+")


def names() -> list[str]:
    """The names ``sql`` accepts, sorted."""
    return sorted(
        entry.name.removesuffix(".sql")
        for entry in files(__package__).iterdir()
        if entry.name.endswith(".sql")
    )


def sql(name: str) -> str:
    """The text of ``<name>.sql``; LookupError (with the known names) for any other name."""
    if not _NAME.fullmatch(name) or name not in names():
        raise LookupError(
            f"no database trigger file {name!r} in db/triggers; known: {', '.join(names())}"
        )
    return files(__package__).joinpath(f"{name}.sql").read_text(encoding="utf-8")
