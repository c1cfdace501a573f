"""`automation up`: every process comes up, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support import wait_for, wait_for_stack
from worker.embedded import free_port
from worker.queues import QUEUE_NAMES


# One stack for both behaviours, the summary and the stop: each start costs about 20 s.
def test_up_reports_each_process_ready_serves_the_console_and_ctrl_c_stops_them_all(
    app: Any, tmp_path: Path
) -> None:
    api_port, flower_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "API_PORT": str(api_port),
        "FLOWER_PORT": str(flower_port),
    }
    printed = tmp_path / "up.out"
    with printed.open("w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_stack(app, printed)
        summary = printed.read_text().splitlines()
        assert "services (configured):" in summary
        ready = {line.split()[0] for line in summary if " ready (" in line}
        assert ready == {*(f"worker-{queue}" for queue in QUEUE_NAMES), "beat", "api", "flower"}
        base = f"http://127.0.0.1:{api_port}"
        assert summary[-5:] == [
            f"status page  {base}/console",
            f"API          {base}/api/automation (OpenAPI: {base}/api/openapi.json)",
            f"Flower       http://127.0.0.1:{flower_port}",
            f"logs         {tmp_path / 'logs'}/NAME.log (`automation logs NAME` follows one)",
            "Ctrl-C stops everything",
        ]
        assert httpx.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}
        # No Celery banner on the terminal: every process's output is in its own log.
        assert "[config]" not in printed.read_text()
        assert "celery beat" in (tmp_path / "logs" / "beat.log").read_text()
        # Beat is up: it reconciled the defaults into the live schedule and leads.
        wait_for(_beat_leads, timeout=30)
        children = psutil.Process(up.pid).children(recursive=True)
        # Workers, beat, the console, Flower (and the workers' pool children).
        assert len(children) >= len(QUEUE_NAMES) + 3

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0, printed.read_text()[-3000:]
        time.sleep(0.5)
        assert [c.pid for c in children if c.is_running() and c.status() != "zombie"] == []
    finally:
        if up.poll() is None:
            up.kill()


def _beat_leads() -> bool:
    from sqlalchemy import text

    from db.session import get_engine

    with get_engine().connect() as conn:
        leads = conn.scalar(text("SELECT expires_at > clock_timestamp() FROM beat_leader"))
        entries = conn.scalar(text("SELECT count(*) FROM schedule_entries"))
    return bool(leads) and bool(entries)


def _embedded_env(data_dir: Path) -> dict[str, str]:
    """`automation up`'s environment for embedded services of its own, on free ports."""
    unset = {"DATABASE_URL", "REDIS_URL", "BROKER_URL"}
    env = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("TEST_")}
    return {
        **env,
        "DATA_DIR": str(data_dir),
        "EMBEDDED_POSTGRES_PORT": str(free_port()),
        "EMBEDDED_REDIS_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
    }


def _processes_in(directory: Path) -> list[psutil.Process]:
    """Processes working in ``directory``: PostgreSQL (every backend works in its PGDATA)
    and redis-server (in its --dir) of a DATA_DIR, whatever their process titles say."""
    found = []
    for process in psutil.process_iter():
        try:
            if Path(process.cwd()).is_relative_to(directory):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.broker_independent  # embedded services of its own
def test_ctrl_c_with_output_piped_to_a_reader_that_dies_first_still_stops_the_services(
    tmp_path: Path,
) -> None:
    # `automation up | tee up.log`, then Ctrl-C: the terminal signals the whole pipeline,
    # tee dies at once, and every later write of ours meets a closed pipe.
    data_dir = tmp_path / "data"
    copy = tmp_path / "tee.out"
    reader = subprocess.Popen(
        ["tee", str(copy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        process_group=0,  # a group of its own (in our session, so others may join it)
    )
    assert reader.stdin is not None
    with (tmp_path / "up.err").open("wb") as err:
        up = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "up", "--no-beat", "--no-flower", "--no-api"],
            env=_embedded_env(data_dir),
            stdout=reader.stdin,
            stderr=err,
            process_group=reader.pid,  # one pipeline, one process group, as a shell makes
        )
    reader.stdin.close()
    try:
        # (tee makes its file once it runs: not yet, maybe, on a busy machine.)
        wait_for(
            lambda: copy.exists() and "Ctrl-C stops everything" in copy.read_text(),
            timeout=120,
            interval=0.5,
        )
        assert _processes_in(data_dir)  # the embedded services run (else this proves nothing)

        os.killpg(reader.pid, signal.SIGINT)
        assert reader.wait(timeout=10) != 0  # the reader died of the signal
        up.wait(timeout=120)
        assert [p.name() for p in _processes_in(data_dir) if p.status() != "zombie"] == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for process in _processes_in(data_dir):  # never leave a failed run's services behind
            process.kill()
