"""RabbitMQ as the broker: what it does that Redis needs leases and a custom transport for.

Run when the suite's broker is RabbitMQ (TEST_BROKER_URL, see tests/services.py); skipped
otherwise. The Redis broker's side of the same promises is in test_worker_loss.py (a lease)
and test_poison_messages.py (malformed envelopes on Redis lists).

- A worker killed mid-task (SIGKILL of its whole process group, as a lost host) closes its
  connection with it, and RabbitMQ hands the unacknowledged message to another consumer at
  once: well within the lease (``WORKER_LEASE_SECONDS``, 60 s), which plays no part here.
- A malformed message published to the inbox ``celery`` (any AMQP client can publish any
  body, content type and headers) becomes one dead letter, and the worker goes on.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import broker_is_amqp, runs_of, wait_for, waiting_in, worker_process
from worker.queues import INBOX_QUEUE

pytestmark = pytest.mark.skipif(
    not broker_is_amqp(), reason="RabbitMQ only: TEST_BROKER_URL names no amqp:// broker"
)

EXTRA = "tests.system.extra_tasks"
# Far below the lease: the redelivery must owe nothing to it.
PROMPTLY = 15.0


def test_a_killed_workers_message_is_redelivered_to_another_worker_at_once(
    session: Any, app: Any
) -> None:
    assert app.conf.broker_url.startswith("amqp")
    with worker_process(app, "analysis", app_module=EXTRA) as doomed:
        result = app.send_task(
            "analysis.test_sleep", kwargs={"seconds": 600, "redelivered_seconds": 0}
        )
        [first] = wait_for(lambda: runs_of(session, result.id), timeout=30)
        # The survivor is up and idle before the kill: what it gets, it gets from RabbitMQ.
        with worker_process(app, "analysis", app_module=EXTRA) as survivor:
            os.killpg(doomed.pid, signal.SIGKILL)  # the whole host is gone
            doomed.wait()
            killed_at = time.monotonic()
            survivor_name = result.get(timeout=PROMPTLY)
            back_after = time.monotonic() - killed_at
            assert survivor.poll() is None

    assert back_after < PROMPTLY
    assert survivor_name != first.worker_host
    runs = wait_for(lambda: [r for r in runs_of(session, result.id) if r.status == "success"])
    assert runs[0].worker_host == survivor_name


def dead_letters(engine: Any, after: int) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id, reason, task_id, queue, body FROM dead_letters "
                    "WHERE id > :after ORDER BY id"
                ),
                {"after": after},
            )
        )


def _headers(task_id: str) -> dict[str, Any]:
    return {"lang": "py", "task": "automation.ping", "id": task_id, "retries": 0}


# (body, content type, headers): each is what a careless or hostile publisher might send.
MALFORMED: dict[str, tuple[bytes, str | None, bool]] = {
    "body-not-json": (b"not json at all", "application/json", True),
    "body-a-json-number": (b"42", "application/json", True),
    "content-type-pickle": (b"\x80\x04K*.", "application/x-python-serialize", True),
    "content-type-unknown": (b"[[], {}, {}]", "text/plain", True),
    "no-headers-at-all": (b'{"hello": "world"}', "application/json", False),
}


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_a_malformed_message_on_the_inbox_becomes_a_dead_letter_and_the_worker_goes_on(
    shape: str, app: Any, engine: Any
) -> None:
    body, content_type, with_headers = MALFORMED[shape]
    task_id = str(uuid.uuid4())
    with engine.connect() as conn:
        before = conn.scalar(text("SELECT coalesce(max(id), 0) FROM dead_letters"))
    inbox = app.amqp.queues[INBOX_QUEUE]
    with worker_process(app, ",".join(["default", INBOX_QUEUE])) as worker:
        with app.producer_or_acquire() as producer:
            producer.publish(
                body,
                exchange=inbox.exchange,
                routing_key=inbox.routing_key,
                declare=[inbox],
                content_type=content_type,
                content_encoding="binary",
                headers=_headers(task_id) if with_headers else {},
            )
        [letter] = wait_for(lambda: dead_letters(engine, before), timeout=20)
        # Still consuming the inbox: a ping sent after it is answered.
        assert app.send_task("automation.ping", queue=INBOX_QUEUE).get(timeout=30)["worker"]
        assert worker.poll() is None
        assert waiting_in(app, INBOX_QUEUE) == 0

    assert letter.reason
    assert letter.queue == INBOX_QUEUE
    if with_headers:
        assert letter.task_id == task_id
    assert dead_letters(engine, before) == [letter]  # one record, not requeued
