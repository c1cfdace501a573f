"""No secret leaves the place it is kept: not into logs, run history, results, dead
letters, Flower, ``automation status``, or any process's command line.

``automation up`` runs the whole stack (a worker per queue, beat, the console, Flower) with
recognisable values in every secret setting; after some work, including failures and a
dead letter, every sink is searched for them, its summary and each process's log among
them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis as redis_lib
from cryptography.fernet import Fernet
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from tests.support import wait_for, wait_for_stack
from worker.embedded import free_port

MARK = uuid.uuid4().hex[:10]
DATABASE_PASSWORD = f"pg-{MARK}-password"  # trust authentication ignores it
SPOTIFY_SECRET = f"sp-{MARK}-client-secret"
FLOWER_PASSWORD = f"fl-{MARK}-password"
FERNET_KEY = Fernet.generate_key().decode()
SECRETS = (DATABASE_PASSWORD, SPOTIFY_SECRET, FLOWER_PASSWORD, FERNET_KEY)


def leaks(where: str, text_: str) -> list[str]:
    return [f"{where}: {secret[:6]}…" for secret in SECRETS if secret in text_]


@pytest.fixture
def stack(app: Any, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    port = free_port()
    database_url = make_url(os.environ["DATABASE_URL"]).set(password=DATABASE_PASSWORD)
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "FLOWER_PORT": str(port),
        "API_PORT": str(free_port()),
        "FLOWER_BASIC_AUTH": f"ops:{FLOWER_PASSWORD}",
        "SPOTIFY_CLIENT_ID": "client-id",
        "SPOTIFY_CLIENT_SECRET": SPOTIFY_SECRET,
        "TOKEN_ENCRYPTION_KEY": FERNET_KEY,
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_stack(app, log)
        yield up, log, port
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            try:
                up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()


def test_no_secret_reaches_a_log_a_record_a_result_flower_status_or_a_command_line(
    app: Any,
    engine: Engine,
    redis_client: redis_lib.Redis,
    stack: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    up, log, port = stack
    # Work that succeeds, fails, and cannot be run at all.
    app.send_task("automation.ping").get(timeout=30)
    app.send_task("automation.status").get(timeout=60)
    failed = app.send_task(
        "playlists.generate", kwargs={"user_id": 987654, "playlist_type": "daily_mix"}
    )
    with pytest.raises(Exception, match="no user with id 987654"):
        failed.get(timeout=60)
    app.send_task("no.such_task", queue="celery")

    def recorded() -> bool:
        with engine.connect() as conn:
            runs = conn.scalar(text("SELECT count(*) FROM task_runs WHERE finished_at IS NOT NULL"))
            dead = conn.scalar(text("SELECT count(*) FROM dead_letters"))
        return bool(runs and runs >= 3 and dead)

    wait_for(recorded, timeout=60)
    # The values are really in use (else finding none of them would prove nothing): the
    # processes hold them in their environment, which only their own user can read.
    environments = "\n".join(
        "\0".join(f"{k}={v}" for k, v in child.environ().items())
        for child in psutil.Process(up.pid).children(recursive=True)
    )
    assert all(secret in environments for secret in SECRETS)
    found: list[str] = []

    # Every process's command line, ours and everyone else's.
    for process in psutil.process_iter(["cmdline"]):
        found += leaks(f"cmdline of {process.pid}", " ".join(process.info["cmdline"] or []))
    # Flower, as an operator sees it (it must ask for the password first).
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/workers", timeout=10).status_code == 401
    for path in ("/api/workers?refresh=1", "/api/tasks", "/workers", "/tasks"):
        page = httpx.get(f"{base}{path}", auth=("ops", FLOWER_PASSWORD), timeout=30)
        assert page.status_code == 200, path
        found += leaks(f"flower {path}", page.text)
    # Run history, dead letters and every other table, as text.
    with engine.connect() as conn:
        tables = conn.scalars(
            text("SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'")
        ).all()
        for table in tables:
            rows = conn.execute(text(f"SELECT t::text FROM {table} AS t")).scalars().all()  # noqa: S608
            found += leaks(f"table {table}", "\n".join(rows))
    # Redis: results, the run journal, locks, everything.
    for key in redis_client.scan_iter(count=1000):
        kind = redis_client.type(key).decode()
        if kind == "string":
            value = str(redis_client.get(key))
        elif kind == "hash":
            value = str(redis_client.hgetall(key))
        elif kind == "list":
            value = str(redis_client.lrange(key, 0, -1))
        elif kind == "stream":
            value = str(redis_client.xrange(key))
        else:
            value = ""
        found += leaks(f"redis {key!r}", value)
    # What the operator's status command prints, both ways.
    status_env = {**os.environ, "SPOTIFY_CLIENT_SECRET": SPOTIFY_SECRET}
    for args in (["status"], ["status", "--json"]):
        printed = subprocess.run(
            [sys.executable, "-m", "worker.cli", *args],
            env=status_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found += leaks(f"automation {' '.join(args)}", printed.stdout + printed.stderr)
    # Every line every process of the stack logged.
    up.send_signal(signal.SIGINT)
    up.wait(timeout=120)
    found += leaks("automation up's output", log.read_text(errors="replace"))
    for process_log in (log.parent / "logs").glob("*.log"):
        found += leaks(process_log.name, process_log.read_text(errors="replace"))

    assert found == []
