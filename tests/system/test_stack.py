"""`automation up`: every process comes up, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tests.support import wait_for, wait_for_stack
from worker.embedded import free_port
from worker.queues import QUEUE_NAMES


def test_up_runs_a_worker_per_queue_beat_and_flower_and_ctrl_c_stops_them_all(
    app: Any, tmp_path: Path
) -> None:
    flower_port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path), "FLOWER_PORT": str(flower_port)}
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_stack(app, log)
        # Beat is up: it reconciled the defaults into the live schedule and leads.
        wait_for(_beat_leads, timeout=30)
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= len(QUEUE_NAMES) + 2  # workers, beat, flower (+ pool children)

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=120) == 0, log.read_text()[-3000:]
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
