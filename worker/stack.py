"""``automation up``: the whole stack in one terminal, and all of it gone on Ctrl-C.

Starts (embedded services if no URLs are set,) migrations, one worker per queue, beat and
Flower; prefixes each process's output with its name; stops everything when told to or
when any process dies, workers first and services last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

from db.migrate import upgrade
from worker.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.queues import QUEUE_NAMES, worker_queues
from worker.settings import Settings

STOP_GRACE_SECONDS = 60  # warm shutdown lets running tasks finish; then SIGKILL


@dataclass
class Child:
    name: str
    argv: list[str]
    # Variables for this child only. Secrets go here, never in argv: any local user can
    # read a process's arguments (ps, /proc/<pid>/cmdline), but not its environment.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    process: subprocess.Popen[str] | None = field(default=None, repr=False)


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker", *args]


def children(settings: Settings, concurrency: int, beat: bool, flower: bool) -> list[Child]:
    procs = [
        Child(
            f"worker-{queue}",
            celery_argv(
                "worker",
                "--queues",
                ",".join(worker_queues(queue)),
                "--hostname",
                f"{queue}@%h",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "INFO",
            ),
        )
        for queue in QUEUE_NAMES
    ]
    if beat:
        procs.append(Child("beat", celery_argv("beat", "--loglevel", "INFO")))
    if flower:
        options = [
            f"--address={settings.flower_address}",
            f"--port={settings.flower_port}",
            # Flower forgets everything on restart unless told to keep its state.
            "--persistent=True",
            f"--db={settings.data_dir / 'flower.db'}",
            "--state_save_interval=60000",
        ]
        secrets = {}
        if settings.flower_basic_auth is not None:
            # Flower reads every FLOWER_<option> from its environment.
            secrets["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth.get_secret_value()
        procs.append(Child("flower", celery_argv("flower", *options), env=secrets))
    return procs


def _relay(name: str, stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(f"{name:>19} | {line}")
        sys.stdout.flush()


@contextmanager
def services(settings: Settings) -> Iterator[dict[str, str]]:
    """The services' URLs: the configured ones, or embedded ones started here."""
    if not settings.uses_embedded_services:
        yield {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
        return
    postgres = EmbeddedPostgres(settings.data_dir, settings.embedded_postgres_port)
    redis_server = EmbeddedRedis(settings.data_dir, settings.embedded_redis_port)
    print(f"starting embedded PostgreSQL and Redis (data in {settings.data_dir}/)", flush=True)
    try:
        urls = {"DATABASE_URL": postgres.start(), "REDIS_URL": redis_server.start()}
        yield urls
    finally:
        print("stopping embedded Redis and PostgreSQL", flush=True)
        redis_server.stop()
        postgres.stop()


def run(settings: Settings, concurrency: int = 1, beat: bool = True, flower: bool = True) -> int:
    """Run the stack until SIGINT/SIGTERM or until one of its processes dies."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with services(settings) as urls:
        print("applying migrations", flush=True)
        upgrade(urls["DATABASE_URL"])
        procs = children(settings, concurrency, beat, flower)
        env = {**os.environ, **urls, "PYTHONUNBUFFERED": "1"}
        exit_code = 0
        try:
            for child in procs:
                # Own session: the terminal's Ctrl-C reaches us only, and we stop them in order.
                child.process = subprocess.Popen(
                    child.argv,
                    env={**env, **child.env},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
                assert child.process.stdout is not None
                threading.Thread(
                    target=_relay, args=(child.name, child.process.stdout), daemon=True
                ).start()
            if flower:
                scheme_note = " (basic auth)" if settings.flower_basic_auth else ""
                print(
                    f"Flower: http://{settings.flower_address}:{settings.flower_port}"
                    f"{scheme_note}   |   Ctrl-C stops everything",
                    flush=True,
                )
            while not stop.wait(1.0):
                dead = [c for c in procs if c.process and c.process.poll() is not None]
                if dead:
                    for child in dead:
                        code = child.process.returncode if child.process else None
                        print(
                            f"{child.name} exited with code {code}; stopping the stack",
                            file=sys.stderr,
                            flush=True,
                        )
                    exit_code = 1
                    break
        finally:
            _stop_all(procs)
    return exit_code


def _stop_all(procs: list[Child]) -> None:
    running = [c for c in procs if c.process is not None and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            print(
                f"{child.name} did not stop in {STOP_GRACE_SECONDS} s; killing it",
                file=sys.stderr,
                flush=True,
            )
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
