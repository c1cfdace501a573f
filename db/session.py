"""Engine and sessions. Helpers here never commit: the unit of work belongs to the caller."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker.settings import get_settings


def make_engine(
    url: str,
    pool_pre_ping: bool = True,
    options: str | None = None,
    idle_in_transaction_seconds: float | None = None,
    **kwargs: object,
) -> Engine:
    """``options``: server settings for every connection (libpq's ``options``).

    ``idle_in_transaction_seconds`` (default: two worker leases): the server ends a session
    that sits this long inside a transaction without a word. That is a client cut off by
    the network, or stalled, mid-transaction: the server cannot tell it from a slow one and
    would keep its row locks for as long as TCP takes to notice (hours, with the kernel's
    defaults), stalling whatever needs those rows, the rescue of the very work it held
    included. Past two leases its worker is presumed dead and its work is done elsewhere.
    """
    if idle_in_transaction_seconds is None:
        idle_in_transaction_seconds = 2 * get_settings().worker_lease_seconds
    server = (
        f"-c idle_in_transaction_session_timeout={math.ceil(idle_in_transaction_seconds * 1000)}"
    )
    connect_args: dict[str, object] = {
        # Fail fast when the database is unreachable, so the task's retry policy (not a
        # hung worker slot) deals with it.
        "connect_timeout": 5,
        "application_name": "music-automation",
        "options": f"{server} {options}" if options else server,
    }
    engine = create_engine(url, pool_pre_ping=pool_pre_ping, connect_args=connect_args, **kwargs)
    event.listen(engine, "handle_error", _ended_by_the_server)
    return engine


def _ended_by_the_server(context: ExceptionContext) -> None:
    """The idle-in-transaction timeout ends the session as a shutdown would: the connection
    is gone (the pool must drop it) and the task may try again on a new one. psycopg calls
    it an InternalError, which would fail the task for good; as an OperationalError it is
    one of the transient errors the tasks retry (worker/base_task.py)."""
    original = context.original_exception
    if isinstance(original, psycopg.errors.IdleInTransactionSessionTimeout):
        context.is_disconnect = True
        raise OperationalError(context.statement, context.parameters, original) from original


@functools.cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@functools.cache
def relaxed_engine() -> Engine:
    """For commits that may be lost in a database crash because they are redone, not lost
    (the ledger's claims and completions: the row goes back to pending or processing and is
    published again). They do not wait for the disk: ``synchronous_commit`` is off on every
    connection, which saves a round trip per transaction over ``SET LOCAL``."""
    # No ping before each checkout either: a connection the database dropped fails its
    # task with a transient error, retried in seconds on a fresh one.
    return make_engine(
        get_settings().database_url, pool_pre_ping=False, options="-c synchronous_commit=off"
    )


@functools.cache
def drainer_engine() -> Engine:
    """The run journal's drainer's: one connection, no ping before each batch (a lost
    connection fails the batch, which waits in Redis and is retried)."""
    return make_engine(get_settings().database_url, pool_pre_ping=False, pool_size=1)


@functools.cache
def autocommit_engine() -> Engine:
    """Each statement its own transaction (beat's lease and fires): a process frozen
    between two statements holds no lock and no open transaction anyone must wait out."""
    return make_engine(get_settings().database_url, isolation_level="AUTOCOMMIT", pool_size=2)


@functools.cache
def _sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _sessionmaker()()


@contextmanager
def session_scope(bind: Connection | None = None) -> Iterator[Session]:
    """One transaction: commit if the block returns, roll back if it raises. On ``bind``
    (a connection the caller prepared and will release) rather than one from the pool."""
    session = new_session() if bind is None else Session(bind=bind, expire_on_commit=False)
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
    for engine in (get_engine, relaxed_engine):
        if engine.cache_info().currsize:
            engine().dispose(close=False)
