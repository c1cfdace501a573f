"""Every execution of every task lands in task_runs, and recording never costs the task."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, text

from db.models import TaskRun
from tests.support import runs_of, wait_for


def an_hour_ago() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)


def test_a_successful_run_is_recorded_with_its_timing_and_worker(
    app: Any, celery_worker: Any, session: Any
) -> None:
    result = app.send_task("automation.status")
    result.get(timeout=30)

    [run] = wait_for(lambda: [r for r in runs_of(session, result.id) if r.finished_at])
    assert run.task_name == "automation.status"
    assert run.status == "success"
    assert run.queue == "default"
    assert run.delivery == 1
    assert run.worker_host and socket.gethostname() in run.worker_host
    assert run.runtime_seconds is not None and run.runtime_seconds >= 0
    assert run.finished_at >= run.started_at
    assert (run.result_summary or "").startswith('{"background_tasks": ')
    assert run.committed_at is not None  # its transaction committed, and the row says so


def test_a_failed_run_is_recorded_with_its_error_and_not_retried(
    app: Any, celery_worker: Any, session: Any
) -> None:
    result = app.send_task("automation.trigger", kwargs={"task": "no_such_thing"})
    with pytest.raises(Exception, match="unknown task 'no_such_thing'"):
        result.get(timeout=30)

    [run] = wait_for(lambda: [r for r in runs_of(session, result.id) if r.finished_at])
    assert run.status == "failure"
    assert "UnknownTriggerError" in (run.error or "")
    assert "valid: all, " in (run.error or "")
    assert run.args_summary == '{"args": [], "kwargs": {"task": "no_such_thing"}}'


def test_the_task_still_runs_when_its_run_cannot_be_recorded(
    app: Any, celery_worker: Any, engine: Any
) -> None:
    # automation.trigger touches no table itself, so only the recording can fail here.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE task_runs RENAME TO task_runs_away"))
    try:
        outcome = app.send_task("automation.trigger", kwargs={"task": "status"}).get(timeout=30)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE task_runs_away RENAME TO task_runs"))
    assert [sent["task"] for sent in outcome["triggered"]] == ["automation.status"]


def earlier_deliveries_died(engine: Any, redis_client: Any, task_id: str, deliveries: int) -> None:
    """As if ``deliveries`` runs of this message started and their worker died each time."""
    from worker.run_journal import inflight_key

    redis_client.set(inflight_key(task_id, 0), deliveries)
    with engine.begin() as conn:
        conn.execute(
            insert(TaskRun),
            [
                {
                    "task_id": task_id,
                    "task_name": "automation.status",
                    "status": "started",
                    "delivery": n,
                    "started_at": an_hour_ago(),
                }
                for n in range(1, deliveries + 1)
            ],
        )


def test_a_redelivered_message_marks_the_unfinished_run_lost_and_runs(
    app: Any, celery_worker: Any, session: Any, engine: Any, redis_client: Any
) -> None:
    task_id = str(uuid.uuid4())
    earlier_deliveries_died(engine, redis_client, task_id, 1)

    app.send_task("automation.status", task_id=task_id).get(timeout=30)

    runs = wait_for(
        lambda: (
            [r for r in runs_of(session, task_id) if r.status == "success" and r.finished_at]
            and [r for r in runs_of(session, task_id) if r.status != "started"]
        )
    )
    assert [(r.status, r.delivery) for r in runs] == [("lost", 1), ("success", 2)]


def test_retries_are_not_counted_as_deliveries_of_a_dead_worker(
    app: Any, celery_worker: Any, session: Any, redis_client: Any
) -> None:
    from worker.run_journal import INFLIGHT_PREFIX

    result = app.send_task("automation.status")
    result.get(timeout=30)
    wait_for(lambda: [r for r in runs_of(session, result.id) if r.finished_at])

    # A finished run, whatever its outcome, leaves no delivery in flight behind it.
    assert list(redis_client.scan_iter(INFLIGHT_PREFIX + result.id + "*")) == []


# -- the journal's rules, driven without a worker ------------------------------------------


def a_run(task_id: str, delivery: int = 1) -> Any:
    from worker.run_journal import RunStart, new_run_key

    return RunStart(
        run_key=new_run_key(),
        task_id=task_id,
        task_name="automation.status",
        retries=0,
        args_summary="{}",
        queue="default",
        forwarded_from=None,
        worker_host="w@test",
        started_at=an_hour_ago() + dt.timedelta(minutes=delivery),
    )


def drain(engine: Any, redis_client: Any) -> None:
    from worker.run_journal import STREAM, Drainer

    drainer = Drainer(engine, redis_client)
    drainer.ensure_group()
    while drainer.drain_once(">"):
        pass
    # A worker's drainer may have taken some entries: wait until it has stored them.
    wait_for(lambda: redis_client.xlen(STREAM) == 0)


@pytest.mark.committed
def test_a_run_killed_after_its_transaction_committed_is_success_not_lost(
    engine: Any, redis_client: Any, session: Any
) -> None:
    from worker.run_journal import Journal, mark_committed

    journal = Journal(redis_client)
    first = a_run("t-commit", delivery=1)
    assert journal.start(first) == 1
    with engine.begin() as conn:  # the task's own transaction, marker included
        mark_committed(conn, first, an_hour_ago() + dt.timedelta(minutes=2))
    # ... and then the child is SIGKILLed: no finish entry. The message comes back a lease
    # later, long after the first start was stored. (Sent at once, the second start could
    # be stored first by another drainer, the in-process worker's, before the first.)
    drain(engine, redis_client)
    second = a_run("t-commit", delivery=2)
    assert journal.start(second) == 2
    journal.finish(
        second, {"delivery": 2, "status": "success", "finished_at": "2026-01-01T00:00:00+00:00"}
    )
    drain(engine, redis_client)

    runs = runs_of(session, "t-commit")
    assert [(r.delivery, r.status, r.committed_at is not None) for r in runs] == [
        (1, "success", True),
        (2, "success", False),
    ]


@pytest.mark.committed
def test_a_run_that_never_finished_is_lost_once_its_message_comes_back(
    engine: Any, redis_client: Any, session: Any
) -> None:
    from worker.run_journal import Journal

    journal = Journal(redis_client)
    journal.start(a_run("t-lost", delivery=1))
    drain(engine, redis_client)
    assert [r.status for r in runs_of(session, "t-lost")] == ["started"]

    journal.start(a_run("t-lost", delivery=2))
    drain(engine, redis_client)

    assert [(r.delivery, r.status) for r in runs_of(session, "t-lost")] == [
        (1, "lost"),
        (2, "started"),
    ]


@pytest.mark.committed
def test_a_run_cut_off_by_a_lost_connection_ends_cut_off_and_is_not_a_dead_delivery(
    engine: Any, redis_client: Any, session: Any
) -> None:
    from worker.run_journal import Journal

    journal = Journal(redis_client)
    run = a_run("t-cut", delivery=1)
    journal.start(run)
    journal.finish(
        run,
        {
            "delivery": 1,
            "status": "cut_off",
            "finished_at": "2026-01-01T00:00:00+00:00",
            "error": "cut off",
        },
    )
    drain(engine, redis_client)

    assert [r.status for r in runs_of(session, "t-cut")] == ["cut_off"]
    # The message comes back and counts as its first delivery again: nobody died.
    assert journal.start(a_run("t-cut")) == 1


@pytest.mark.committed
def test_entries_drained_out_of_order_or_twice_give_the_same_row(
    engine: Any, redis_client: Any, session: Any
) -> None:
    from worker.run_journal import RunStart, store

    run: RunStart = a_run("t-order")
    start = ("1-0", "start", run.fields(), 1)
    finish = (
        "2-0",
        "finish",
        {
            **run.fields(),
            "delivery": 1,
            "status": "failure",
            "error": "boom",
            "finished_at": "2026-01-01T00:00:00+00:00",
            "runtime_seconds": 1.5,
        },
        0,
    )
    store(engine, [finish])
    store(engine, [start])
    store(engine, [finish, start])

    [row] = runs_of(session, "t-order")
    assert (row.status, row.error, row.runtime_seconds, row.delivery) == ("failure", "boom", 1.5, 1)


def test_a_ten_megabyte_argument_fails_once_naming_it_and_is_stored_truncated(
    app: Any, celery_worker: Any, session: Any, redis_client: Any
) -> None:
    huge = "x" * (10 * 1024 * 1024)
    result = app.send_task("automation.trigger", kwargs={"task": huge})

    with pytest.raises(Exception, match="argument task: ") as raised:
        result.get(timeout=60)

    assert len(str(raised.value)) < 600
    [run] = wait_for(lambda: [r for r in runs_of(session, result.id) if r.finished_at])
    assert run.status == "failure"  # once: an InvalidArgumentsError is never retried
    assert "InvalidArgumentsError" in (run.error or "")
    assert len(run.error or "") <= 500 and len(run.args_summary or "") <= 500
    stored = redis_client.get(f"celery-task-meta-{result.id}") or b""
    assert 0 < len(stored) < 2000


def test_a_message_that_expired_before_it_ran_is_recorded_revoked(
    app: Any, celery_worker: Any, session: Any
) -> None:
    expired = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    result = app.send_task("automation.ping", expires=expired)

    [run] = wait_for(lambda: [r for r in runs_of(session, result.id) if r.finished_at])
    assert (run.status, run.error) == ("revoked", "expired before it ran")


@pytest.mark.committed
def test_a_later_delivery_never_replaces_a_stored_success(app: Any, redis_client: Any) -> None:
    from worker.run_journal import Journal, PendingResult

    backend = app.backend
    journal = Journal(redis_client)

    def finish_with(run: Any, state: str, result: Any) -> None:
        meta = {"status": state, "result": result, "traceback": None, "children": []}
        value = backend.encode({**meta, "task_id": run.task_id})
        pending = PendingResult(backend.get_key_for_task(run.task_id), value, 60)
        journal.finish(run, {"status": state.lower()}, result=pending)

    first = a_run("t-result")
    finish_with(first, "SUCCESS", 42)
    # The message came back (its worker died before the ack) and this time it failed.
    finish_with(a_run("t-result", delivery=2), "FAILURE", "boom")

    stored = app.AsyncResult("t-result")
    assert (stored.state, stored.result) == ("SUCCESS", 42)


@pytest.mark.committed  # the worker's drainer may store the entry
def test_a_finish_recorded_off_the_fast_path_is_counted_for_metrics(redis_client: Any) -> None:
    # A run revoked before it started (or whose journal failed once) is appended by
    # record(): it is counted like any other finish, without a duration.
    from worker import run_journal

    run_journal.record(
        "finish",
        {
            "run_key": uuid.uuid4().hex,
            "task_id": "t",
            "task_name": "x.y",
            "status": "revoked",
            "started_at": an_hour_ago().isoformat(),
            "finished_at": an_hour_ago().isoformat(),
        },
    )

    counted = run_journal.read_run_metrics(redis_client)
    assert counted.runs == {("x.y", "revoked"): 1}
    assert counted.buckets == {}
