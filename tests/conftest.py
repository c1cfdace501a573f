"""Real PostgreSQL and Redis for every test; a real Celery worker for queue tests.

The services are the ones TEST_DATABASE_URL / TEST_REDIS_URL name (CI points them at the
machine's own), else an embedded PostgreSQL and Redis started once for the session. Each
run gets its own freshly migrated database, and the app is configured through the same
environment variables production uses, before it is imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy.engine import make_url

_state: dict[str, Any] = {}


def _psycopg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # pragma: no cover  (xdist is not used)
        return
    server_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    tmp = Path(tempfile.mkdtemp(prefix="automation-tests-"))
    _state["tmp"] = tmp
    if not server_url or not redis_url:
        from worker.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

        services = Path(tempfile.gettempdir()) / "automation-test-services"
        if not server_url:
            postgres = EmbeddedPostgres(services, free_port(), database="test")
            server_url = postgres.start()
            _state["postgres"] = postgres
        if not redis_url:
            embedded_redis = EmbeddedRedis(services, free_port())
            redis_url = embedded_redis.start()
            _state["redis"] = embedded_redis

    # A database of our own on that server, dropped at the end.
    name = f"automation_test_{uuid.uuid4().hex[:8]}"
    admin = _psycopg_conninfo(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    _state.update(admin=admin, database=name)

    redis_lib.Redis.from_url(redis_url).flushdb()
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DATA_DIR=str(tmp / "data"),
        ENVIRONMENT="development",
    )
    for variable in ("FLOWER_BASIC_AUTH", "TIMEZONE"):
        os.environ.pop(variable, None)

    from db.migrate import upgrade

    upgrade(database_url)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "database" in _state:
        from db.session import get_engine

        get_engine().dispose()
        with psycopg.connect(_state["admin"], autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{_state["database"]}" WITH (FORCE)')
    for service in ("redis", "postgres"):
        if service in _state:
            _state[service].stop()
    shutil.rmtree(_state.get("tmp", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def app() -> Any:
    from worker import app as celery_app

    return celery_app


@pytest.fixture(scope="session")
def engine() -> Any:
    from db.session import get_engine

    return get_engine()


@pytest.fixture
def session(engine: Any) -> Iterator[Any]:
    from sqlalchemy.orm import Session

    with Session(engine, expire_on_commit=False) as db_session:
        yield db_session


@pytest.fixture
def redis_client() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(os.environ["REDIS_URL"])
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _isolated(engine: Any) -> Iterator[None]:
    """Every test starts from empty tables, empty queues and an empty run journal."""
    yield
    from sqlalchemy import text

    from worker import run_journal

    client = redis_lib.Redis.from_url(os.environ["REDIS_URL"])
    # Let the test's last run records land first, so none arrives in the next test.
    deadline = time.monotonic() + 3
    while client.xlen(run_journal.STREAM) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.xtrim(run_journal.STREAM, maxlen=0)
    inflight = list(client.scan_iter(run_journal.INFLIGHT_PREFIX + "*"))
    if inflight:
        client.delete(*inflight)

    with engine.begin() as conn:
        tables = conn.scalars(
            text(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ).all()
        if tables:
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    from worker.queues import INBOX_QUEUE, QUEUE_NAMES, redis_keys

    client.delete(*(key for queue in (*QUEUE_NAMES, INBOX_QUEUE) for key in redis_keys(queue)))
    client.close()


@pytest.fixture(scope="session")
def celery_worker(app: Any) -> Iterator[Any]:
    """A real worker, in this process, consuming every queue but the analysis and enrichment.

    Ledger tasks (the analysis queue) and enrichment tasks run in worker subprocesses
    started by their tests, which decide when a backlog is taken, what Spotify the workers
    talk to, and may kill a worker mid-task.
    """
    from celery.contrib.testing.worker import start_worker

    from db.session import get_engine
    from worker.queues import INBOX_QUEUE, QUEUE_NAMES
    from worker.redis_client import get_redis
    from worker.run_journal import Drainer

    subprocess_queues = {"analysis", "enrichment"}
    # A worker started from the command line starts its journal drainer on worker_ready,
    # which the test worker never sends: start the same drainer beside it.
    drainer = Drainer(get_engine(), get_redis())
    drainer.start()

    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=[q for q in (*QUEUE_NAMES, INBOX_QUEUE) if q not in subprocess_queues],
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
    drainer.stop()
    drainer.join(timeout=10)


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A second, empty database on the test server (no migrations applied)."""
    name = f"automation_scratch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_state["admin"], autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield (
        make_url(os.environ["DATABASE_URL"])
        .set(database=name)
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(_state["admin"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
