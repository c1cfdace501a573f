"""The base task's promises that are not about a single run: publish after commit, and
what a run a workflow started carries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from db.session import get_engine, session_scope
from tests import factories as f
from tests.support import purge_queue, waiting_in
from worker.origin import ORIGIN_HEADER
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


def test_a_run_started_by_a_workflow_may_still_choose_its_transactions_isolation(
    app: Any, celery_worker: Any, session: Any
) -> None:
    # The aggregation's first statement is SET TRANSACTION ISOLATION LEVEL; the workflow
    # origin the run carries must not get there first.
    user = f.user(session)
    session.commit()
    origin = json.dumps({"chain": [1]})

    sent = app.send_task(
        "listening.aggregate_user", kwargs={"user_id": user.id}, headers={ORIGIN_HEADER: origin}
    )

    assert sent.get(timeout=30)["status"] == "done"


def test_a_run_started_by_a_workflow_leaves_no_origin_on_the_pooled_connection(
    app: Any, celery_worker: Any, session: Any
) -> None:
    user = f.user(session)
    session.commit()
    origin = json.dumps({"chain": [1]})
    app.send_task(
        "listening.aggregate_user", kwargs={"user_id": user.id}, headers={ORIGIN_HEADER: origin}
    ).get(timeout=30)

    with get_engine().connect() as connection:
        seen = connection.execute(text("SELECT current_setting('automation.origin', true)"))
        assert seen.scalar() in (None, "")
