"""The embedded services a fresh machine gets: they start, answer, and keep their data."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

from worker.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

pytestmark = pytest.mark.broker_independent


def test_embedded_postgres_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path, free_port())
    server.start()
    conninfo = f"host=127.0.0.1 port={server.port} user=postgres dbname=automation"
    try:
        with psycopg.connect(conninfo) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (7)")
        server.stop()
        server.start()
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(7,)]
    finally:
        server.stop()


def test_embedded_redis_keeps_its_queues_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, free_port())
    server.start()
    try:
        client = redis.Redis(port=server.port)
        client.lpush("default", "message")
        client.close()
        server.stop()
        server.start()
        client = redis.Redis(port=server.port)
        assert client.lrange("default", 0, -1) == [b"message"]
        client.close()
    finally:
        server.stop()


def test_embedded_services_start_with_a_relative_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DATA_DIR defaults to the relative ".automation"; redis-server changes into its --dir
    # before opening its log file, so relative paths once made it exit at start.
    monkeypatch.chdir(tmp_path)
    server = EmbeddedRedis(Path(".automation"), free_port())
    server.start()
    try:
        assert (tmp_path / ".automation" / "redis.log").exists()
    finally:
        server.stop()
