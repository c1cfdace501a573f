"""The base task's promises that are not about a single run: publish after commit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from db.session import session_scope
from tests.support import purge_queue, waiting_in
from worker.publishing import publish_after_commit

# No worker consumes this queue, so what reaches it stays there for the test to count.
PARKING = "test-parking"


@pytest.fixture
def parking(app: Any) -> Any:
    purge_queue(app, PARKING)
    yield lambda: waiting_in(app, PARKING)
    purge_queue(app, PARKING)


def test_a_message_is_published_only_once_its_transaction_commits(app: Any, parking: Any) -> None:
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        publish_after_commit(session, app.signature("automation.status", queue=PARKING))
        assert parking() == 0

    assert parking() == 1


def test_a_message_is_dropped_when_its_transaction_rolls_back(app: Any, parking: Any) -> None:
    with pytest.raises(RuntimeError), session_scope() as session:
        publish_after_commit(session, app.signature("automation.status", queue=PARKING))
        raise RuntimeError("the work failed")

    assert parking() == 0


def test_a_savepoint_commit_does_not_publish_before_the_transaction_commits(
    app: Any, parking: Any
) -> None:
    with session_scope() as session:
        with session.begin_nested():
            session.execute(text("SELECT 1"))
        publish_after_commit(session, app.signature("automation.status", queue=PARKING))
        with session.begin_nested():  # a savepoint released after the message was queued
            session.execute(text("SELECT 1"))
        assert parking() == 0

    assert parking() == 1


def test_a_savepoint_rollback_keeps_the_messages_of_the_transaction(app: Any, parking: Any) -> None:
    with session_scope() as session:
        publish_after_commit(session, app.signature("automation.status", queue=PARKING))
        with pytest.raises(Exception, match="division by zero"), session.begin_nested():
            session.execute(text("SELECT 1 / 0"))

    assert parking() == 1
