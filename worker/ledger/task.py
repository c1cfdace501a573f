"""Durable background tasks: PostgreSQL's ``background_tasks`` is the record, Redis the carrier.

A ledger task's message names its row (``background_task_id``). The message acts only if
it claims the row (``pending`` -> ``processing``, one atomic UPDATE, committed before the
work starts so the rescuer can see it). The work and the row's ``completed`` commit in one
transaction, so a track's analysis is either written and recorded, or neither.

What can go wrong, and what answers it:

- a message delivered twice (a republish racing its original, a redelivery): the second
  finds the row claimed or finished and does nothing;
- the worker dies mid-task: Redis hands the message back (reject-on-worker-lost, or one
  lease after a whole worker's death; ``worker.liveness``), and that same message may
  resume its own ``processing`` row; ``cleanup.stuck_tasks`` also puts the row back to
  ``pending`` once the worker's heartbeat has expired;
- the run is cut off (the worker lost its broker connection and cancelled it): the row
  goes back to ``pending`` for the message, which comes back unacknowledged;
- the message is lost (Redis restarted without persistence): the row is still ``pending``
  and ``cleanup.stuck_tasks`` publishes it again;
- a transient error (database, Redis): Celery's retry with backoff and jitter; the row
  waits in ``pending`` for the retry message; a permanent one fails the row at once.

The priority (0 normal .. 9 most urgent) travels as the message's Redis priority, so a
worker with a backlog takes the urgent work first.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar, cast

import psycopg
from celery import Celery
from celery.exceptions import Ignore, Retry
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.queries import driver_sql, queries
from db.session import get_engine, relaxed_engine, session_scope
from worker.arguments import validate_arguments
from worker.base_task import TRANSIENT_ERRORS, AutomationTask
from worker.errors import PermanentError
from worker.origin import marked_connection, origin_of, release, set_on_connection
from worker.queues import FALLBACK, family_of

log = logging.getLogger(__name__)
T = TypeVar("T")
SQL = queries("worker.ledger", "ledger")

# Every ledger task claims and completes its row. Through SQLAlchemy each of those costs
# some 70 us of Python beyond the driver's (execution context, result metadata), about a
# tenth of a no-op ledger task here, so these statements run on the psycopg connection
# SQLAlchemy holds: the same connection, and for the completion the same transaction as
# the body's session. The SQL itself stays in background.sql.
_CLAIM = driver_sql(SQL["claim"])
_ROW_STATE = driver_sql(SQL["row_state"])
_COMPLETE = driver_sql(SQL["complete"])


class UnknownTrackError(PermanentError):
    pass


class ClaimLostError(Exception):
    """The row was taken from this run (rescued as orphaned): its work must not commit."""


class LedgerTask(AutomationTask):
    """Base for tasks recorded in the ledger. The task's name is ``<family>.<task_type>``.

    The body has the signature ``(self, track_id, background_task_id=None)`` and returns a
    JSON-able summary, stored as the row's ``result``. A by-name sender that gives only the
    track id gets the active row for (type, track), created if there is none.
    """

    @property
    def task_type(self) -> str:
        return str(self.name).partition(".")[2]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)
        # Before a row is looked up or made: a bad id fails once, naming it.
        validate_arguments(self.name, self.run, args, kwargs)
        track_id = kwargs["track_id"] if "track_id" in kwargs else args[0]
        origin = origin_of(self.request)
        try:
            row_id = kwargs.get("background_task_id") or self._row_for(track_id, origin)
            conn = _kept_connection()
            if origin is not None:
                # The claim and the completion change the row's status outside any
                # session: the connection itself carries the origin for this run.
                _autocommit(conn, lambda: set_on_connection(_driver(conn), origin))
            try:
                attempt = self._claim(conn, row_id)
                if attempt is None:
                    return {
                        "background_task_id": row_id,
                        "skipped": "claimed or finished elsewhere",
                    }
                return self._run_claimed(conn, row_id, attempt, args, kwargs)
            finally:
                if origin is not None and not conn.closed and not conn.invalidated:
                    with suppress(Exception):
                        _autocommit(conn, lambda: set_on_connection(_driver(conn), None))
        except TRANSIENT_ERRORS as exc:
            raise self.retry_transient(exc) from exc

    def _run_claimed(
        self,
        conn: Connection,
        row_id: int,
        attempt: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            self._refuse_if_redelivered_too_often()
            try:
                return self._run_and_complete(conn, row_id, attempt, args, kwargs)
            except TRANSIENT_ERRORS as exc:
                raise self.retry_transient(exc) from exc
        except Retry as exc:
            self._settle(SQL["release_for_retry"], row_id, attempt, error=_describe(exc))
            raise
        except ClaimLostError as exc:
            # This run was presumed dead (its worker stalled or was cut off past its lease)
            # and the row went to another run; its work was rolled back. Expected after a
            # partition, so not a failure: the run is recorded lost, the stale message is
            # acknowledged, and the row's own run goes on untouched.
            log.warning("%s[%s]: %s", self.name, self.request.id, exc)
            self.request.run_outcome = "lost"
            raise Ignore(str(exc)) from None
        except (SystemExit, KeyboardInterrupt) as exc:
            # Stopped from outside (the worker lost its broker connection and cancelled
            # the run, or is shutting down): not the task's failure. Its message was not
            # acknowledged and comes back; the row waits for it.
            self._settle(SQL["release_cut_off"], row_id, attempt, error=_describe(exc))
            raise
        except BaseException as exc:
            self._settle(SQL["fail"], row_id, attempt, error=_describe(exc))
            raise

    def _row_for(self, track_id: int, origin: str | None) -> int:
        """The active row for (type, track): a by-name message without a row id."""
        params = {"task_type": self.task_type, "track_id": track_id}
        for _ in range(3):  # the active row can finish between the two statements
            with _origin_scope(origin) as session:
                row_id = enqueue_row(session, self.task_type, track_id, celery_task_id=None)
                if row_id is None:
                    row_id = session.scalar(SQL["active_row"], params)
            if row_id is not None:
                return int(row_id)
        raise RuntimeError(f"{self.name}: no stable ledger row for track {track_id}")

    def _claim(self, conn: Connection, row_id: int) -> int | None:
        """The attempt number this run holds the row with, or None if it is not ours.

        The claim is one statement, committed by itself (autocommit: no BEGIN and COMMIT
        round trips) before the work starts, so the rescuer sees the row taken.
        """
        request = self.request
        resumable = bool(request.retries) or getattr(request, "delivery", 1) > 1
        driver = _driver(conn)
        params = {
            "id": row_id,
            "celery_task_id": request.id,
            "worker_host": request.hostname,
            "resumable": resumable,
        }

        def claim() -> tuple[Any, Any]:
            claimed = driver.execute(_CLAIM, params).fetchone()
            state = None if claimed else driver.execute(_ROW_STATE, {"id": row_id}).fetchone()
            return claimed, state

        claimed, state = _autocommit(conn, claim)
        if claimed is None:
            self.request.run_outcome = "duplicate"
            log.info(
                "%s: background task %s not claimed (%s); nothing to do",
                self.name,
                row_id,
                "row no longer exists" if state is None else f"it is {state[0]}",
            )
            return None
        return int(claimed[0])

    def _run_and_complete(
        self,
        conn: Connection,
        row_id: int,
        attempt: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        # The work and the row's completion commit together, on the claim's connection.
        with Session(bind=conn, expire_on_commit=False) as session:
            try:
                result = self._run_with_session(session, args, kwargs)
                session.flush()
                run = getattr(self.request, "run", None)
                params = {
                    "id": row_id,
                    "celery_task_id": self.request.id,
                    "attempt": attempt,
                    "result": json.dumps(result, default=str),
                    "run_key": None if run is None else run.run_key,
                }
                driver = _driver(conn)
                if conn.in_transaction():
                    # The body's writes are sent and hold the connection's transaction:
                    # the completion joins it and commits with them.
                    completed = driver.execute(_COMPLETE, params).fetchone()
                else:
                    # The body wrote nothing, so the completion is the whole transaction:
                    # one autocommit statement, no BEGIN and COMMIT round trips.
                    completed = _autocommit(
                        conn, lambda: driver.execute(_COMPLETE, params).fetchone()
                    )
                if not completed or not completed[0]:
                    raise ClaimLostError(
                        f"background task {row_id} was taken from this run; its work is discarded"
                    )
                session.commit()
            except BaseException:
                session.rollback()
                raise
        return result

    def _settle(self, statement: Any, row_id: int, attempt: int, *, error: str) -> None:
        # Best effort: if the database is what failed, the rescuer settles the row later.
        try:
            with session_scope() as session:
                session.execute(
                    statement,
                    {
                        "id": row_id,
                        "celery_task_id": self.request.id,
                        "attempt": attempt,
                        "error": error,
                    },
                )
        except Exception:
            log.warning("could not record the outcome of background task %s", row_id, exc_info=True)


@contextmanager
def _origin_scope(origin: str | None) -> Iterator[Session]:
    """``session_scope``, on a connection carrying the run's workflow origin if it has one
    (``worker.origin``)."""
    if origin is None:
        with session_scope() as session:
            yield session
        return
    connection = marked_connection(get_engine(), origin)
    try:
        with session_scope(bind=connection) as session:
            yield session
    finally:
        release(connection)


# The claim and the work of every ledger run in a process share one connection, kept
# open between runs: no pool checkout and return per task. Each run leaves it outside any
# transaction (committed or rolled back); one that failed is invalidated, and the next run
# opens another. Keyed by process: a forked child never uses its parent's.
_kept: dict[int, Connection] = {}


def _kept_connection() -> Connection:
    conn = _kept.get(os.getpid())
    if conn is None or conn.closed or conn.invalidated:
        conn = _kept[os.getpid()] = relaxed_engine().connect()
    elif conn.in_transaction():  # never expected; a session bound here would not commit it
        conn.rollback()
    return conn


def _driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under ``conn`` (checked out, so present)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    return cast(psycopg.Connection[Any], driver)


def _autocommit(conn: Connection, statements: Callable[[], T]) -> T:
    """Run ``statements`` on ``conn``'s psycopg connection, each committed by itself.

    ``conn`` must be outside a transaction. A connection the database failed on is
    invalidated, so the pool never hands it out again.
    """
    driver = _driver(conn)
    driver.autocommit = True
    try:
        return statements()
    except psycopg.Error:
        conn.invalidate()
        raise
    finally:
        with suppress(psycopg.Error):
            driver.autocommit = False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Retry) and exc.exc is not None:
        exc = exc.exc
    return f"{type(exc).__name__}: {exc}"[:2000]


def enqueue_row(
    session: Session,
    task_type: str,
    track_id: int,
    *,
    priority: int = 0,
    celery_task_id: str | None,
) -> int | None:
    """Insert an active row unless one exists; its id, or None when it collapsed."""
    try:
        with session.begin_nested():
            row_id: int | None = session.scalar(
                SQL["enqueue"],
                {
                    "task_type": task_type,
                    "track_id": track_id,
                    "priority": priority,
                    "celery_task_id": celery_task_id,
                },
            )
            return row_id
    except IntegrityError as exc:
        if isinstance(exc.orig, psycopg.errors.ForeignKeyViolation):
            raise UnknownTrackError(f"{task_type}: there is no track {track_id}") from exc
        raise


def ledger_tasks(app: Celery) -> dict[str, str]:
    """task_type -> registered task name, for every ledger task of ``app``."""
    return {
        task.task_type: name for name, task in app.tasks.items() if isinstance(task, LedgerTask)
    }


def ledger_task_name(app: Celery, task_type: str) -> str:
    try:
        return ledger_tasks(app)[task_type]
    except KeyError:
        raise PermanentError(
            f"unknown background task type {task_type!r}; known: "
            f"{', '.join(sorted(ledger_tasks(app)))}"
        ) from None


def time_limits(app: Celery) -> dict[str, int]:
    """Each ledger task type's hard time limit: past it no run of the type is alive."""
    return {task_type: family_of(name).time_limit for task_type, name in ledger_tasks(app).items()}


def limit_params(app: Celery) -> dict[str, Any]:
    return {"limits": json.dumps(time_limits(app)), "default_limit": FALLBACK.time_limit}
