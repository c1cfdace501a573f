"""Run history with real worker subprocesses: a message that keeps killing its worker is
refused after the cap, and bad ledger arguments fail before any row is touched."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from tests.support import runs_of, wait_for, worker_process


def test_a_message_that_keeps_killing_its_worker_is_refused_after_the_cap(
    app: Any, session: Any
) -> None:
    # Each delivery kills its worker child outright; Redis hands the message back each
    # time (reject on worker lost). MAX_DELIVERIES defaults to 3: the fourth is refused.
    with worker_process(app, "analysis", app_module="tests.system.extra_tasks"):
        result = app.send_task("analysis.test_kill_own_worker")
        with pytest.raises(Exception, match="delivered 4 times"):
            result.get(timeout=60)

        runs = wait_for(
            lambda: (
                [r for r in runs_of(session, result.id) if r.finished_at and r.delivery == 4]
                and runs_of(session, result.id)
            ),
            timeout=30,
        )
    assert [(r.delivery, r.status) for r in runs] == [
        (1, "lost"),
        (2, "lost"),
        (3, "lost"),
        (4, "refused"),
    ]


# -- the journal's rules, driven without a worker ------------------------------------------


def test_bad_ledger_arguments_fail_before_any_row_is_made_or_claimed(
    app: Any, session: Any
) -> None:
    from db.models import BackgroundTask
    from tests.support import worker_process

    with worker_process(app, "analysis"):
        no_track = app.send_task("analysis.energy_analysis", kwargs={"track_id": None})
        with pytest.raises(Exception, match="argument track_id: "):
            no_track.get(timeout=30)
        negative = app.send_task(
            "analysis.energy_analysis", kwargs={"track_id": 1, "background_task_id": -7}
        )
        with pytest.raises(Exception, match="argument background_task_id: "):
            negative.get(timeout=30)

        def finished() -> list[str]:
            ids = (no_track.id, negative.id)
            return [r.status for t in ids for r in runs_of(session, t) if r.finished_at]

        statuses = wait_for(lambda: len(finished()) == 2 and finished())
    assert statuses == ["failure", "failure"]
    session.expire_all()
    assert session.scalars(select(BackgroundTask)).all() == []
