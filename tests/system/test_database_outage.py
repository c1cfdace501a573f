"""A PostgreSQL outage delays work; it never discards it, and never stops a by-name sender.

The tests run a PostgreSQL server of their own (embedded, on a free port), so they can
stop and start it under a real ``celery worker`` subprocess. Tasks are sent by name from
another process whose settings name that server, as another service would, while the
server is down. When it is back, every one of them has run once, successfully, and its run
is in that server's ``task_runs``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from db.migrate import upgrade
from tests import factories as f
from tests.support import wait_for, worker_process
from worker.celery_app import celery_config
from worker.embedded import EmbeddedPostgres, free_port
from worker.queues import INBOX_QUEUE
from worker.settings import get_settings

# Its broker is a Redis database of its own whatever the suite's broker is: the outage
# under test is PostgreSQL's.
pytestmark = pytest.mark.broker_independent

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_SECONDS = 15
RECOVERY_TIMEOUT = 120

# What another service does: sends by name with its own settings (DATABASE_URL included),
# knowing nothing of our routing; prints the task ids it was given.
SENDER = """
import json, sys
from worker import app
plan = json.loads(sys.argv[1])
print(json.dumps([app.send_task(name, kwargs=kw, queue=queue).id for name, queue, kw in plan]))
"""


@dataclass
class Server:
    postgres: EmbeddedPostgres
    url: str
    engine: Engine
    # A Redis database of its own too: the session's in-process test worker consumes the
    # same queue names, and must not take these messages and run them elsewhere. It is the
    # broker here on either test broker (a RabbitMQ vhost is shared with that worker); the
    # outage under test is PostgreSQL's.
    redis_url: str

    @property
    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.url, "REDIS_URL": self.redis_url, "BROKER_URL": self.redis_url}

    def stop(self) -> None:
        self.engine.dispose()
        self.postgres.stop()

    def start(self) -> None:
        self.postgres.start()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    directory = Path(tempfile.mkdtemp(prefix="automation-outage-"))
    postgres = EmbeddedPostgres(directory, free_port(), database="outage")
    url = postgres.start()
    upgrade(url)
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": 3})
    redis_url = make_url(os.environ["REDIS_URL"])
    redis_url = redis_url.set(database=str((int(redis_url.database or 0) + 1) % 16))
    own_redis = redis.Redis.from_url(str(redis_url))
    own_redis.flushdb()
    yield Server(postgres, url, engine, str(redis_url))
    own_redis.flushdb()
    own_redis.close()
    engine.dispose()
    postgres.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def up(server: Server) -> Iterator[Server]:
    """The server, running (a failed test may have left it stopped)."""
    server.start()
    yield server
    server.start()


def worker_log_tail(queues: str, lines: int = 40) -> str:
    logs = Path(os.environ["DATA_DIR"]).parent.glob(f"{queues.replace(',', '-')}-*@test.log")
    log = max(logs, key=lambda p: p.stat().st_mtime, default=None)
    if log is None:
        return "(no worker log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def control_app(redis_url: str) -> Celery:
    """An app that reaches workers on ``redis_url`` (the production configuration there)."""
    app = Celery(set_as_current=False)
    settings = get_settings().model_copy(update={"broker_url": redis_url, "redis_url": redis_url})
    app.config_from_object(celery_config(settings))
    return app


def send_by_name(server: Server, plan: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Send ``plan`` from another process whose settings name ``server``; its task ids."""
    done = subprocess.run(
        [sys.executable, "-c", SENDER, json.dumps(plan)],
        env={**os.environ, **server.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    trace = done.stderr.strip().splitlines()
    assert done.returncode == 0, (
        f"send_task by name exited {done.returncode} while PostgreSQL was down:\n"
        + "\n".join([line for line in trace if "/celery/" in line or "<string>" in line])
        + "\n"
        + "\n".join(trace[-3:])
    )
    ids: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


def test_sending_by_name_while_postgresql_is_down_does_not_raise(up: Server) -> None:
    up.stop()
    try:
        ids = send_by_name(
            up, [("automation.ping", INBOX_QUEUE, {}), ("automation.status", "default", {})]
        )
    finally:
        up.start()
    assert len(ids) == 2


def test_tasks_sent_during_an_outage_all_run_once_when_postgresql_is_back(up: Server) -> None:
    with Session(up.engine) as session:
        user_id = f.user(session).id
        session.commit()
    plan: list[tuple[str, str, dict[str, Any]]] = []
    for queue in (INBOX_QUEUE, "default"):
        plan += [
            ("automation.ping", queue, {}),
            ("automation.status", queue, {}),
        ]
    for queue in (INBOX_QUEUE, "enrichment"):
        plan += [("enrichment.progress", queue, {})]
    for queue in (INBOX_QUEUE, "playlists"):
        plan += [("playlists.generate", queue, {"user_id": user_id, "playlist_type": "daily_mix"})]

    queues = f"default,{INBOX_QUEUE},enrichment,playlists"
    with worker_process(
        control_app(up.redis_url),
        queues,
        concurrency=2,
        env=up.env,
    ) as worker:
        up.stop()
        try:
            ids = send_by_name(up, plan)
            time.sleep(OUTAGE_SECONDS)
        finally:
            up.start()
        assert worker.poll() is None, "the worker exited during the outage"

        def outcomes() -> dict[str, list[str]]:
            with up.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT task_id, status FROM task_runs "
                        "WHERE task_id = ANY(:ids) ORDER BY id"
                    ),
                    {"ids": ids},
                ).all()
            found: dict[str, list[str]] = {task_id: [] for task_id in ids}
            for task_id, status in rows:
                found[task_id].append(status)
            return found

        def all_succeeded() -> bool:
            return all(statuses.count("success") == 1 for statuses in outcomes().values())

        try:
            wait_for(all_succeeded, timeout=RECOVERY_TIMEOUT, interval=1)
        except AssertionError:
            found = outcomes()
            raise AssertionError(
                "after the outage, not every task sent by name ran once with success "
                "(task: runs' statuses): "
                + "; ".join(
                    f"{name} via {queue}: {found[task_id]}"
                    for (name, queue, _), task_id in zip(plan, ids, strict=True)
                )
                + f"\nthe worker's log ends:\n{worker_log_tail(queues)}"
            ) from None

    with up.engine.connect() as conn:
        letters = conn.scalar(
            text("SELECT count(*) FROM dead_letters WHERE task_id = ANY(:ids)"), {"ids": ids}
        )
    assert letters == 0
