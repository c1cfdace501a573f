"""Messages published after the transaction that motivates them commits.

A task or a helper that makes rows a worker will look for queues the message on the
session (``publish_after_commit``); it goes out once the session's outermost transaction
commits, and is dropped if it rolls back, so no worker ever looks for a row that is not
there yet, and no message announces a row that never was.

The hooks that do it are installed where the Celery app is built (``install_session_hooks``,
called by ``worker.celery_app.create_app``), not when this module is imported: importing a
domain module never changes how every Session in the process behaves.
"""

from __future__ import annotations

from celery.canvas import Signature
from sqlalchemy import event
from sqlalchemy.orm import Session

_PENDING = "publish_after_commit"


def publish_after_commit(session: Session, signature: Signature) -> None:
    """Send ``signature`` once ``session`` commits; drop it if the session rolls back."""
    session.info.setdefault(_PENDING, []).append(signature)


# Savepoints (begin_nested) commit and roll back inside the real transaction: only the
# outermost commit makes rows visible to a worker, and only its rollback undoes them.
def _publish_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    for signature in session.info.pop(_PENDING, []):
        signature.apply_async()


def _drop_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop(_PENDING, None)


def install_session_hooks() -> None:
    """Publish on every Session's commit, drop on its rollback. Idempotent."""
    if not event.contains(Session, "after_commit", _publish_pending):
        event.listen(Session, "after_commit", _publish_pending)
        event.listen(Session, "after_rollback", _drop_pending)
