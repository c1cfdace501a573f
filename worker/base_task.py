"""The base class every task uses: session and transaction, retry policy, delivery cap.

A task body only calls a plain function with ``self.session``; this class opens the
session on first use (a task that never touches the database opens no connection),
commits when the body returns and rolls back when it raises. The commit carries the run's
marker (``task_runs.committed_at``), so history never calls a committed run lost.
Messages the body wants sent go through ``publish_after_commit`` so a worker never looks
for a row that is not committed yet.

Retries: only transient errors (the database or Redis unreachable), with exponential
backoff and jitter, for long enough to outlast an outage of several minutes; anything
else fails at once, and a ``PermanentError`` says why in one line.
"""

from __future__ import annotations

import logging
import random
from contextvars import ContextVar
from typing import Any

import kombu.exceptions
import psycopg
import redis.exceptions
import sqlalchemy.exc
from celery import Task
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from db.session import get_engine, new_session
from worker import run_journal
from worker.arguments import validate_arguments
from worker.backoff import backoff
from worker.errors import DeferredError, DeliveryLimitExceededError
from worker.origin import marked_connection, origin_of, release
from worker.settings import get_settings

log = logging.getLogger(__name__)


# Infrastructure hiccups that a later attempt can get past. Everything else fails at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)

# Backoff for transient errors: 2, 4, 8, 16, 32, then 60 s, each drawn from its upper half
# (jitter without the near-zero waits of full jitter). Twelve retries wait 4 to 8 minutes
# in all: a database restart or failover is outlasted, a dead database is reported.
TRANSIENT_RETRY_BASE_SECONDS = 2.0
TRANSIENT_RETRY_CAP_SECONDS = 60.0
TRANSIENT_MAX_RETRIES = 12
# The message header that counts a run's deferrals (``AutomationTask.defer``).
DEFERRALS_HEADER = "deferrals"


def transient_countdown(retries: int, draw: float) -> float:
    """Seconds before retry number ``retries + 1``; ``draw`` is uniform in [0, 1)."""
    return backoff(retries + 1, TRANSIENT_RETRY_BASE_SECONDS, TRANSIENT_RETRY_CAP_SECONDS, draw)


class _RunSession:
    """A run's session, opened on first use; its transactions carry the run's workflow
    origin, if it has one (``worker.origin``)."""

    def __init__(self, session: Session | None = None, origin: str | None = None) -> None:
        self.session = session
        self.origin = origin
        self.connection: Connection | None = None

    def get(self) -> Session:
        if self.session is None:
            if self.origin is None:
                self.session = new_session()
            else:
                self.connection = marked_connection(get_engine(), self.origin)
                self.session = Session(bind=self.connection, expire_on_commit=False)
        return self.session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        if self.connection is not None:
            release(self.connection)


_current: ContextVar[_RunSession | None] = ContextVar("task_session", default=None)


class AutomationTask(Task):  # type: ignore[misc]  # Celery ships no type hints
    # Arguments are checked against the signature when our code sends.
    typing = True
    max_retries = TRANSIENT_MAX_RETRIES

    @property
    def session(self) -> Session:
        scope = _current.get()
        if scope is None:
            raise RuntimeError(f"{self.name}: no database session outside a task run")
        return scope.get()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Before anything else: a bad argument fails once, naming it, and reaches no SQL.
        validate_arguments(self.name, self.run, args, kwargs)
        if self.request.called_directly:
            return self._run_in_transaction(args, kwargs)
        self._refuse_if_redelivered_too_often()
        try:
            return self._run_in_transaction(args, kwargs)
        except TRANSIENT_ERRORS as exc:
            raise self.retry_transient(exc) from exc

    def retry_transient(self, exc: BaseException) -> BaseException:
        """Retry after a transient error, or raise it once the retries are spent."""
        # Deferrals are retries to Celery, not failures: they do not spend this budget.
        deferred = self.deferrals
        countdown = transient_countdown(self.request.retries - deferred, random.random())
        log.warning(
            "transient error, retry in %.1f s: %s", countdown, run_journal.describe_error(exc)
        )
        retry: BaseException = self.retry(
            exc=exc, countdown=countdown, max_retries=TRANSIENT_MAX_RETRIES + deferred
        )
        return retry

    @property
    def deferrals(self) -> int:
        """How many times this message was deferred (``defer``) so far."""
        return int(getattr(self.request, DEFERRALS_HEADER, None) or 0)

    def defer(self, reason: str, countdown: float) -> BaseException:
        """Run again in ``countdown`` seconds, same task id and arguments: what this run
        needs has not happened yet (the day's aggregation, for playlists). Each deferral
        is a run with status ``retry`` and ``reason`` as its error, so the wait is visible
        in the run history; the caller bounds how long it waits (``deferrals``)."""
        count = self.deferrals + 1
        log.info("deferred (%d): %s; again in %.0f s", count, reason, countdown)
        # The message's own headers go on with it (forwarded_from, schedule_entry, ...);
        # only plain values: the request also carries this run's journal objects.
        headers = {
            key: value
            for key, value in (getattr(self.request, "headers", None) or {}).items()
            if isinstance(value, str | int | float | bool)
        }
        headers[DEFERRALS_HEADER] = count
        retry: BaseException = self.retry(
            exc=DeferredError(reason),
            countdown=countdown,
            max_retries=self.request.retries + 1,
            headers=headers,
        )
        return retry

    def _run_in_transaction(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scope = _RunSession(origin=origin_of(self.request))
        try:
            result = self._run_with_scope(scope, args, kwargs)
            if scope.session is not None:
                self.mark_committed(scope.session)
                scope.session.commit()
            return result
        except BaseException:
            if scope.session is not None:
                scope.session.rollback()
            raise
        finally:
            scope.close()

    def _run_with_session(
        self, session: Session, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The body, with ``self.session`` bound to ``session`` (the caller's transaction)."""
        return self._run_with_scope(_RunSession(session), args, kwargs)

    def _run_with_scope(
        self, scope: _RunSession, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        token = _current.set(scope)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _current.reset(token)

    def mark_committed(self, session: Session) -> None:
        """Write the run's commit marker into ``session``'s transaction, if it has one."""
        run = getattr(self.request, "run", None)
        if run is None or not session.in_transaction():
            return
        run_journal.mark_committed(session.connection(), run, run_journal.utcnow())

    def _refuse_if_redelivered_too_often(self) -> None:
        # The journal counted earlier deliveries of this message that never finished
        # (their worker died). With reject-on-worker-lost Redis hands the message back each
        # time; without this cap a task that kills its worker would loop forever.
        delivery = getattr(self.request, "delivery", 1)
        limit = get_settings().max_deliveries
        if delivery > limit:
            self.request.run_outcome = "refused"
            raise DeliveryLimitExceededError(
                f"{self.name}[{self.request.id}] delivered {delivery} times, and each earlier "
                f"delivery died with its worker (limit MAX_DELIVERIES={limit}): not run again"
            )
