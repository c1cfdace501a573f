"""Real PostgreSQL and Redis for the integration and system tiers, started once per run.

A pytest plugin the tier conftests register (``config.pluginmanager.import_plugin``), so
a run that collects only ``tests/unit`` never loads it and needs no service at all, and a
run of both tiers starts the services once. The services are the ones
TEST_DATABASE_URL / TEST_REDIS_URL name (CI points them at the machine's own), else an
embedded PostgreSQL and Redis. The broker is that Redis, or the RabbitMQ that
TEST_BROKER_URL names (``amqp://…/vhost``; a vhost of the tests' own, since its queues are
purged): the app and every worker subprocess get it as BROKER_URL, and the tests that are
about kombu's Redis transport itself skip (``tests.support.needs_redis_broker``). Each
run gets its own freshly migrated database, and the app is configured through the same
environment variables production uses, before any test module (which may import the app)
is collected.

Isolation. By default a test's ``session`` lives inside an outer transaction that is
rolled back at the end; the code under test may ``commit()``, which only releases a
savepoint. Tests whose code opens its own sessions or connections (``session_scope()``,
``get_engine()``, the in-process worker, the run-journal drainer, worker subprocesses)
cannot see that transaction nor be undone by it: they are marked ``committed`` (tests
using ``celery_worker`` and every system test are, implicitly), get a plain session, and
the tables are truncated after them. A rollback test that leaves committed rows behind
fails, saying to mark it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_lib
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

_state: dict[str, Any] = {}


def _psycopg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # pragma: no cover  (xdist is not used)
        return
    server_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not server_url or not redis_url:
        import tempfile

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

    client = redis_lib.Redis.from_url(redis_url)
    client.flushdb()
    # A new Redis, not one that lost its data: without an epoch the first worker to start
    # would send cleanup.broker_reset, to run in the middle of some test.
    from worker import liveness

    liveness.new_epoch(client, time.time())
    client.close()
    # Overrides whatever the unit tier's conftest or the shell set: these must answer.
    os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    broker_url = os.environ.get("TEST_BROKER_URL")
    if broker_url:
        os.environ["BROKER_URL"] = broker_url
        purge_broker_queues()  # what an earlier run left in the vhost
    else:
        os.environ.pop("BROKER_URL", None)  # the broker is REDIS_URL
    from worker.settings import get_settings

    get_settings.cache_clear()  # in case anything read the settings before this point

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


def is_committed(request: pytest.FixtureRequest) -> bool:
    """Whether this test's writes are real commits, cleaned up by truncating afterwards."""
    return (
        request.node.get_closest_marker("committed") is not None
        or "celery_worker" in request.fixturenames
    )


@pytest.fixture(scope="session")
def engine() -> Engine:
    from db.session import get_engine

    return get_engine()


@pytest.fixture
def session(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Session]:
    """The test's session: rolled back at the end, or a plain one for ``committed`` tests."""
    if is_committed(request):
        with Session(engine, expire_on_commit=False) as db_session:
            yield db_session
        return
    connection: Connection = engine.connect()
    outer = connection.begin()
    # commit() in the code under test releases a savepoint; the outer transaction stays.
    db_session = Session(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )
    try:
        yield db_session
    finally:
        db_session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def redis_client() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(os.environ["REDIS_URL"])
    yield client
    client.close()


def _tables(engine: Engine) -> list[str]:
    if "tables" not in _state:
        with engine.connect() as conn:
            _state["tables"] = conn.scalars(
                text(
                    "SELECT quote_ident(tablename) FROM pg_tables "
                    "WHERE schemaname = 'public' AND tablename <> 'alembic_version' "
                    "ORDER BY tablename"
                )
            ).all()
    tables: list[str] = _state["tables"]
    return tables


def truncate_tables(engine: Engine) -> None:
    tables = _tables(engine)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def tables_with_rows(engine: Engine) -> list[str]:
    """The tables that are not empty: one round trip, cheap on empty tables."""
    # Table names from the catalog (quote_ident), not values.
    probe = " UNION ALL ".join(
        f"SELECT '{table}' WHERE EXISTS (SELECT 1 FROM {table})"  # noqa: S608
        for table in _tables(engine)
    )
    with engine.connect() as conn:
        return list(conn.scalars(text(probe)).all())


def clear_redis() -> None:
    """Empty queues and an empty run journal, as every integration and system test expects."""
    from console import throttle
    from worker import run_journal
    from worker.queues import all_queue_names, redis_keys

    client = redis_lib.Redis.from_url(os.environ["REDIS_URL"])
    try:
        # Let the test's last run records land first, so none arrives in the next test.
        deadline = time.monotonic() + 3
        while client.xlen(run_journal.STREAM) and time.monotonic() < deadline:
            time.sleep(0.05)
        client.xtrim(run_journal.STREAM, maxlen=0)
        inflight = list(client.scan_iter(run_journal.INFLIGHT_PREFIX + "*"))
        if inflight:
            client.delete(*inflight)
        client.delete(*(key for queue in all_queue_names() for key in redis_keys(queue)))
        # The console's failed sign-ins, counted per address (all tests share 127.0.0.1).
        failures = list(client.scan_iter(throttle.PREFIX + "*"))
        if failures:
            client.delete(*failures)
        purge_broker_queues()
        # Messages a test's killed worker held: one lease later any worker's sweep would
        # put them back on their queue, in the middle of a later test.
        client.delete("unacked", "unacked_index", "unacked_mutex")
        # Each test counts its own runs (/metrics).
        client.delete(*run_journal.RUN_METRICS_KEYS)
    finally:
        client.close()


def purge_broker_queues() -> None:
    """Empty our queues in RabbitMQ, when it is the broker (Redis's are emptied above)."""
    url = os.environ.get("BROKER_URL", "")
    if not url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return
    from kombu import Connection

    from tests.support import purge
    from worker.queues import all_queue_names

    with Connection(url) as connection:
        for name in all_queue_names():
            purge(connection, name)


def isolate(request: pytest.FixtureRequest, engine: Engine) -> Iterator[None]:
    """The body of each tier's autouse isolation fixture (see the module docstring)."""
    yield
    clear_redis()
    if is_committed(request):
        truncate_tables(engine)
        return
    leaked = tables_with_rows(engine)
    if leaked:
        truncate_tables(engine)
        pytest.fail(
            f"{request.node.nodeid} committed rows outside its rolled-back session "
            f"(in {', '.join(leaked)}): mark it @pytest.mark.committed",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def celery_worker(app: Any) -> Iterator[Any]:
    """A real worker, in this process, consuming every queue but analysis, enrichment,
    workflows and ingest.

    Ledger tasks (the analysis queue), enrichment tasks, workflow executions and ingest
    jobs run in worker subprocesses started by the system tests, which decide when a
    backlog is taken, what Spotify or webhook receiver or bucket the workers talk to, and
    may kill a worker mid-task; the integration tests of the ingest dispatcher read its
    messages off the queue, which this worker would otherwise take first. Tests using it
    are ``committed``.
    """
    from celery.contrib.testing.worker import start_worker

    from db.session import get_engine
    from worker.queues import all_queue_names
    from worker.redis_client import get_redis
    from worker.run_journal import Drainer

    subprocess_queues = {"analysis", "enrichment", "workflows", "ingest"}
    # A worker started from the command line starts its journal drainer on worker_ready,
    # which the test worker never sends: start the same drainer beside it.
    drainer = Drainer(get_engine(), get_redis())
    drainer.start()

    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        queues=[q for q in all_queue_names() if q not in subprocess_queues],
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
