"""Alembic environment: the URL comes from the config (set by db.migrate) or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.schema import SchemaItem

from db.models import Base
from db.session import make_engine

# Celery's result backend owns these two tables and creates them itself.
CELERY_OWNED = {"celery_taskmeta", "celery_tasksetmeta"}


def include_object(
    obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    return not (type_ == "table" and name in CELERY_OWNED)


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from worker.settings import get_settings

        url = get_settings().database_url
    engine = make_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        run_migrations(conn)
    engine.dispose()


main()
