"""Engine and sessions. Helpers here never commit: the unit of work belongs to the caller."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from worker.settings import get_settings


def make_engine(url: str, **kwargs: object) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,
        # Fail fast when the database is unreachable, so the task's retry policy (not a
        # hung worker slot) deals with it.
        connect_args={"connect_timeout": 5, "application_name": "music-automation"},
        **kwargs,
    )


@functools.cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@functools.cache
def _sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _sessionmaker()()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: commit if the block returns, roll back if it raises."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_after_fork() -> None:
    """Drop connections inherited from a parent process (they belong to the parent)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
