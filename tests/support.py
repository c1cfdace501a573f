"""Small helpers shared by tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kombu import Queue
from sqlalchemy import select

from db.models import TaskRun

T = TypeVar("T")


def broker_is_amqp() -> bool:
    """RabbitMQ is the broker of this run (TEST_BROKER_URL, see tests/services.py)."""
    return os.environ.get("BROKER_URL", "").startswith(("amqp://", "amqps://", "pyamqp://"))


def needs_redis_broker(why: str) -> pytest.MarkDecorator:
    """Skip on RabbitMQ a test of what only the Redis broker has (``why``: what that is)."""
    return pytest.mark.skipif(broker_is_amqp(), reason=f"Redis broker only: {why}")


def waiting_in(app: Any, queue: str) -> int:
    """Messages waiting in ``queue`` (not held by a worker), on either broker: what a
    passive declare reports (on Redis, the sum over its priority lists)."""
    with app.connection_for_read() as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except connection.channel_errors:  # never declared: nothing was sent to it
            return 0
        finally:
            with contextlib.suppress(*connection.connection_errors, *connection.channel_errors):
                channel.close()


def take_message(app: Any, queue: str) -> tuple[dict[str, Any], Any] | None:
    """The next message waiting in ``queue``, taken off it (on either broker): its headers
    and its decoded body; None if it holds none."""
    with app.connection_for_write() as connection:
        message = Queue(queue, channel=connection.channel()).get(no_ack=True)
        return None if message is None else (dict(message.headers), message.decode())


def purge_queue(app: Any, queue: str) -> None:
    """Empty ``queue``, on either broker. (Not deleted: kombu remembers what it declared on a
    connection, and would publish to a deleted queue's exchange without declaring it anew.)"""
    with app.connection_for_write() as connection:
        purge(connection, queue)


def purge(connection: Any, queue: str) -> None:
    """Empty ``queue`` through a kombu ``connection``; a queue not declared yet is empty."""
    channel = connection.channel()  # a purge of a missing queue closes its channel
    try:
        channel.queue_purge(queue)
    except connection.channel_errors:
        pass
    finally:
        with contextlib.suppress(*connection.connection_errors, *connection.channel_errors):
            channel.close()


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM to ``process``'s group (its own session), then SIGKILL if it outlives
    ``timeout``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(interval)


@contextlib.contextmanager
def worker_process(
    app: Any,
    queues: str,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    app_module: str = "worker",
) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``celery worker`` subprocess (prefork) on ``queues``, answering pings.

    Its own process group, so a test can SIGKILL the whole worker, parent and children, as a
    host failure would. Output goes to a file named in the failure message, if any.
    ``env`` overrides variables of the test's environment (another DATABASE_URL, say);
    ``app_module`` is what ``celery -A`` loads (the production app, or a test module that
    adds tasks to it).
    """
    name = f"{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@test"
    log = Path(os.environ["DATA_DIR"]).parent / f"{name}.log"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app_module,
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--hostname",
        name,
        "--loglevel",
        "INFO",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: app.control.ping(destination=[name], timeout=0.5), timeout=60)
        yield process
    finally:
        stop_process_group(process)


def runs_of(session: Any, task_id: str) -> list[TaskRun]:
    """The ``task_runs`` rows of one message, oldest first, read afresh."""
    session.expire_all()
    return list(
        session.scalars(select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.id))
    )


def wait_for_stack(app: Any, log: Path) -> None:
    """Until ``automation up`` (printing to ``log``) has a worker answering on every queue
    and has printed its summary (every process ready, or named as not)."""
    from worker.queues import QUEUE_NAMES

    expected = {f"{queue}@" for queue in QUEUE_NAMES}

    def workers_answering() -> set[str]:
        replies = app.control.ping(timeout=1.0) or []
        names = {name.split("@")[0] + "@" for reply in replies for name in reply}
        return names if names >= expected else set()

    wait_for(workers_answering, timeout=90, interval=1)
    wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), timeout=120)


@contextlib.contextmanager
def serve_console(settings: Any = None) -> Iterator[str]:
    """The console (``console.app``) served by a real uvicorn on a free loopback port, in a
    thread of this process; yields its base URL. Requests go over real HTTP."""
    import threading

    import httpx
    import uvicorn

    from console.app import create_app
    from worker.embedded import free_port

    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=20)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
