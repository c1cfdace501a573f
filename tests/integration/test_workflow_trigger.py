"""The status trigger's question, "does some active workflow want this change?", answered
through the watch index (db/triggers/job_status_changes_v2.sql): exactly the workflows the
first version's scan found, and the index is what answers it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests import factories as f
from tests.integration.test_workflows import changes, set_status, upload, workflow

FAILED = {"all": [{"field": "new_status", "op": "eq", "value": "failed"}]}
ANY_STATUS = {"all": [{"field": "job.user_id", "op": "gt", "value": 0}]}


@pytest.mark.parametrize(
    ("fields", "recorded"),
    [
        ({}, ["completed"]),  # watches completed uploads
        ({"conditions": FAILED}, []),  # another status
        (
            {"conditions": ANY_STATUS},
            ["pending", "processing", "completed"],
        ),  # any status, insert too
        ({"active": False}, []),
        ({"trigger": {"type": "job_status_changed", "source": "background_tasks"}}, []),
    ],
)
def test_a_change_is_recorded_exactly_when_an_active_workflow_of_its_source_watches_it(
    session: Any, app: Any, fields: dict[str, Any], recorded: list[str]
) -> None:
    user = f.user(session)
    workflow(session, app, **fields)
    job = upload(session, user.id)

    set_status(session, job, "processing", "completed")

    assert [new for _, _, new in changes(session)] == recorded


def test_the_watch_index_answers_the_triggers_lookup(session: Any, app: Any) -> None:
    for _ in range(3):
        workflow(session, app, conditions=FAILED)
    session.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: force the choice
    # The lookup as the trigger makes it: its keys in a text[] (default collation) variable.
    plan = session.scalars(
        text(
            "EXPLAIN SELECT 1 FROM automation_workflows w WHERE w.active "
            "AND workflow_watch_keys(w.source, w.on_statuses) && CAST(:wanted AS text[])"
        ),
        {"wanted": ["upload_jobs:failed", "upload_jobs:*"]},
    ).all()

    assert "ix_automation_workflows_watch" in "\n".join(plan)
