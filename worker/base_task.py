"""The base class every task uses: session and transaction, retry policy, routing guard.

A task body only calls a plain function with ``self.session``; this class opens the
session, commits when the body returns and rolls back when it raises. Messages that the
body wants sent go through ``publish_after_commit`` so a worker never looks for a row that
is not committed yet.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import kombu.exceptions
import psycopg
import redis.exceptions
import sqlalchemy.exc
from celery import Task
from celery.canvas import Signature
from celery.exceptions import Ignore
from sqlalchemy import event
from sqlalchemy.orm import Session

from db.session import session_scope
from worker.errors import DeliveryLimitExceededError, InvalidArgumentsError, PermanentError
from worker.queues import home_queue
from worker.settings import get_settings

log = logging.getLogger(__name__)

# Re-exported: task modules have long imported these from here.
__all__ = [
    "AutomationTask",
    "DeliveryLimitExceededError",
    "InvalidArgumentsError",
    "PermanentError",
    "publish_after_commit",
]


# Infrastructure hiccups that a later attempt can get past. Everything else fails at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)

_current_session: ContextVar[Session | None] = ContextVar("task_session", default=None)


class AutomationTask(Task):  # type: ignore[misc]  # Celery ships no type hints
    # Retry policy: exponential backoff with full jitter, capped, for transient errors only.
    autoretry_for = TRANSIENT_ERRORS
    dont_autoretry_for = (PermanentError,)
    retry_backoff = 2
    retry_backoff_max = 600
    retry_jitter = True
    max_retries = 6
    # Arguments are checked against the signature when our code sends, and a by-name
    # sender's wrong arguments fail on the worker with TypeError (not retried).
    typing = True

    @property
    def session(self) -> Session:
        session = _current_session.get()
        if session is None:
            raise RuntimeError(f"{self.name}: no database session outside a task run")
        return session

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return self._run_in_transaction(args, kwargs)
        self._forward_if_misrouted(args, kwargs)
        self._refuse_if_redelivered_too_often()
        return self._run_in_transaction(args, kwargs)

    def _run_in_transaction(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with session_scope() as session:
            return self._run_with_session(session, args, kwargs)

    def _run_with_session(
        self, session: Session, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The body, with ``self.session`` bound to ``session`` (the caller's transaction)."""
        token = _current_session.set(session)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            _current_session.reset(token)

    def _forward_if_misrouted(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A message that arrived on a queue other than its home queue is sent home.

        By-name senders that know nothing of our routing publish to ``celery``; the default
        workers consume it, and the work must still run on its own kind of worker. The
        same task id is kept so the sender's AsyncResult still answers, and ``Ignore``
        keeps this hop from storing a result.
        """
        arrived_on = (self.request.delivery_info or {}).get("routing_key")
        home = home_queue(self.name)
        if arrived_on is None or arrived_on == home:
            return
        self.apply_async(
            args=args,
            kwargs=kwargs,
            task_id=self.request.id,
            queue=home,
            headers={"forwarded_from": arrived_on},
        )
        self.request.run_outcome = "forwarded"
        log.info("arrived on %r, forwarded to its home queue %r", arrived_on, home)
        raise Ignore()

    def _refuse_if_redelivered_too_often(self) -> None:
        # The prerun signal counted earlier deliveries of this message that never finished
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


def publish_after_commit(session: Session, signature: Signature) -> None:
    """Send ``signature`` once ``session`` commits; drop it if the session rolls back."""
    session.info.setdefault("publish_after_commit", []).append(signature)


# Savepoints (begin_nested) commit and roll back inside the real transaction: only the
# outermost commit makes rows visible to a worker, and only its rollback undoes them.
@event.listens_for(Session, "after_commit")
def _publish_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    for signature in session.info.pop("publish_after_commit", []):
        signature.apply_async()


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop("publish_after_commit", None)
