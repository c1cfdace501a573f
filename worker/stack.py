"""``automation up``: the whole stack in one terminal, and all of it gone on Ctrl-C.

Starts (embedded services if no URLs are set,) migrations, one worker per queue, beat,
the console (``automation api``) and Flower; stops everything when told to or when any
process dies, workers first and services last.

The terminal gets a short summary: the services, each process as it becomes ready, and
where to look. Every line a child prints goes to its log file (``worker.child_logs``);
``--verbose`` also relays them to standard output, each prefixed with its process's name.

Our own output may be a pipe whose reader is gone: ``automation up | tee up.log`` and
Ctrl-C signal the whole pipeline, and tee dies first. No write may interrupt the
shutdown then, above all not the embedded services' stop (see ``Output``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis

from db.migrate import upgrade
from worker import child_logs, liveness
from worker.embedded import EmbeddedPostgres, EmbeddedRedis
from worker.queues import QUEUE_NAMES, worker_queues
from worker.settings import Settings

STOP_GRACE_SECONDS = 60  # warm shutdown lets running tasks finish; then SIGKILL
# How long the summary waits for every process to say it is ready. A worker is up in
# seconds; past this, the summary names the laggards and their logs, and goes on.
READY_TIMEOUT_SECONDS = 90
POLL_SECONDS = 0.5
# The lines of a dead child's log shown with its exit code: its traceback, usually.
DEATH_TAIL_LINES = 20
# What beat logs once it has read the schedule from PostgreSQL (worker/schedules).
BEAT_READY_LINE = "beat: schedule reconciled"
NAME_WIDTH = 19


class Output:
    """One of our standard streams, written so that no failure to write stops us.

    When the reader of a pipe has gone, a write fails with EPIPE (Python ignores SIGPIPE,
    and ``run`` makes sure it stays so: its default action would kill us mid-shutdown).
    From then on the stream's descriptor is pointed at /dev/null, so later writes, ours
    or a library's, and the interpreter's final flush all succeed and go nowhere.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.broken = False
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        self.write(text + "\n")

    def write(self, text: str) -> None:
        with self._lock:
            if self.broken:
                return
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # EPIPE, EIO (terminal gone), closed
                self.broken = True
                self._silence()

    def _silence(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            descriptor = self.stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, descriptor)
            os.close(devnull)


@dataclass
class Child:
    name: str
    argv: list[str]
    # Variables for this child only. Secrets go here, never in argv: any local user can
    # read a process's arguments (ps, /proc/<pid>/cmdline), but not its environment.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    # A line in its output that says it is ready (for processes with no other sign).
    ready_line: str | None = None
    process: subprocess.Popen[str] | None = field(default=None, repr=False)
    log: Path | None = field(default=None, repr=False)
    relay: threading.Thread | None = field(default=None, repr=False)
    saw_ready_line: threading.Event = field(default_factory=threading.Event, repr=False)


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker", *args]


def children(
    settings: Settings, concurrency: int, beat: bool, flower: bool, api: bool
) -> list[Child]:
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
        procs.append(
            Child("beat", celery_argv("beat", "--loglevel", "INFO"), ready_line=BEAT_READY_LINE)
        )
    if api:
        # The console reads API_ADDRESS and API_PORT itself, like every other setting.
        procs.append(Child("api", [sys.executable, "-m", "worker.cli", "api"]))
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


def _relay(child: Child, stream: IO[str], log: IO[str], out: Output | None) -> None:
    """Copy a child's output to its log (and, verbose, to ours) until it closes. Drains
    whatever happens to either copy: a child blocked on a full pipe would never stop."""
    with log:
        for line in stream:
            with contextlib.suppress(OSError):  # a full disk loses lines, not the child
                log.write(line)
            if child.ready_line is not None and child.ready_line in line:
                child.saw_ready_line.set()
            if out is not None:
                out.write(f"{child.name:>{NAME_WIDTH}} | {line}")


def _hide_database_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _hide_password(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


@contextmanager
def services(settings: Settings, out: Output) -> Iterator[dict[str, str]]:
    """The services' URLs: the configured ones, or embedded ones started here (and
    stopped on the way out, whatever happens)."""
    if not settings.uses_embedded_services:
        out.line("services (configured):")
        out.line(f"  PostgreSQL   {_hide_database_password(settings.database_url)}")
        out.line(f"  Redis        {_hide_password(settings.redis_url)}")
        if settings.broker_url != settings.redis_url:
            out.line(f"  broker       {_hide_password(settings.broker_url)}")
        yield {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
        return
    postgres = EmbeddedPostgres(settings.data_dir, settings.embedded_postgres_port)
    redis_server = EmbeddedRedis(settings.data_dir, settings.embedded_redis_port)
    out.line(f"services (embedded, data in {settings.data_dir.resolve()}/):")
    try:
        database_url = postgres.start()
        out.line(f"  PostgreSQL   {database_url}")
        redis_url = redis_server.start()
        out.line(f"  Redis        {redis_url}")
        yield {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    finally:
        out.line("stopping embedded Redis and PostgreSQL")
        # Each stops whatever befalls the other: left running, they hold their ports,
        # and the next `automation up` finds them in its way.
        try:
            redis_server.stop()
        finally:
            postgres.stop()


@dataclass
class Watch:
    """One process the summary waits for: ``probe`` returns a note once it is ready."""

    child: Child
    probe: Callable[[], str | None]
    missing: str  # what is not there yet, for the not-ready message


def _worker_probe(client: redis.Redis, child: Child) -> Callable[[], str | None]:
    host = socket.gethostname()

    def probe() -> str | None:
        assert child.process is not None
        try:
            beats = liveness.worker_info(client)
        except redis.RedisError:
            return None
        for name, info in beats.items():
            # Its own heartbeat, by pid: not one a previous run's worker left behind.
            if info.get("pid") == child.process.pid and info.get("host") == host:
                return f"{name}, queues: {', '.join(info.get('queues', []))}"
        return None

    return probe


def _api_base(settings: Settings) -> str:
    address = settings.api_address
    with contextlib.suppress(ValueError):  # a host name: shown as it is
        listens = ipaddress.ip_address(address)
        if listens.is_unspecified:  # every address: this machine reaches it on loopback
            address = "127.0.0.1" if listens.version == 4 else "::1"
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{settings.api_port}"


def _http_probe(url: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        try:
            answered = httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return None
        return "answers /healthz" if answered else None

    return probe


def _port_probe(address: str, port: int) -> Callable[[], str | None]:
    def probe() -> str | None:
        try:
            with socket.create_connection((address, port), timeout=1):
                return f"listening on {address}:{port}"
        except OSError:
            return None

    return probe


def _watches(settings: Settings, procs: list[Child], client: redis.Redis) -> list[Watch]:
    watches = []
    for child in procs:
        if child.name.startswith("worker-"):
            watches.append(Watch(child, _worker_probe(client, child), "no heartbeat in Redis"))
        elif child.ready_line is not None:
            seen = child.saw_ready_line

            def saw(seen: threading.Event = seen) -> str | None:
                return "schedule read from PostgreSQL" if seen.is_set() else None

            watches.append(Watch(child, saw, f"no {child.ready_line!r} in its log"))
        elif child.name == "api":
            url = f"{_api_base(settings)}/healthz"
            watches.append(Watch(child, _http_probe(url), f"{url} does not answer"))
        elif child.name == "flower":
            probe = _port_probe(settings.flower_address, settings.flower_port)
            watches.append(Watch(child, probe, f"nothing listens on port {settings.flower_port}"))
    return watches


def _where_to_look(settings: Settings, api: bool, flower: bool) -> list[str]:
    lines = []
    if api:
        base = _api_base(settings)
        lines.append(f"status page  {base}/console")
        # The console serves no docs page (it would load scripts from a CDN); its OpenAPI
        # document asks for a token (README, "Operator console").
        lines.append(f"API          {base}/api/automation (OpenAPI: {base}/api/openapi.json)")
    if flower:
        auth = " (basic auth)" if settings.flower_basic_auth else ""
        lines.append(f"Flower       {settings.flower_link}{auth}")
    lines.append(
        f"logs         {child_logs.log_dir(settings.data_dir.resolve())}/NAME.log "
        "(`automation logs NAME` follows one)"
    )
    lines.append("Ctrl-C stops everything")
    return lines


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
    return f"exited with code {code}"


def _report_death(child: Child, err: Output) -> None:
    assert child.process is not None and child.log is not None
    if child.relay is not None:
        # Its last lines are still on their way to the file.
        child.relay.join(timeout=2)
    err.line(f"{child.name} {_exit_description(child.process.returncode)}; the end of {child.log}:")
    for line in child_logs.last_lines(child.log, DEATH_TAIL_LINES):
        err.line(f"  {line}")


def _start(child: Child, env: dict[str, str], settings: Settings, out: Output | None) -> None:
    # Own session: the terminal's Ctrl-C reaches us only, and we stop them in order.
    child.process = subprocess.Popen(
        child.argv,
        env={**env, **child.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    child.log = child_logs.log_path(settings.data_dir.resolve(), child.name)
    log = child_logs.open_for_start(
        settings.data_dir.resolve(), child.name, child.argv, child.process.pid
    )
    assert child.process.stdout is not None
    child.relay = threading.Thread(
        target=_relay,
        args=(child, child.process.stdout, log, out),
        name=f"relay-{child.name}",
        daemon=True,
    )
    child.relay.start()


def run(
    settings: Settings,
    concurrency: int = 1,
    beat: bool = True,
    flower: bool = True,
    api: bool = True,
    verbose: bool = False,
) -> int:
    """Run the stack until SIGINT/SIGTERM or until one of its processes dies."""
    out, err = Output(sys.stdout), Output(sys.stderr)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if hasattr(signal, "SIGPIPE"):  # not on Windows
        # Python's default, made sure of: a closed pipe must be an error we can ignore,
        # not a signal that kills us before the services are stopped.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    code = _run(settings, concurrency, beat, flower, api, verbose, stop, out, err)
    out.line("stopped")
    return code


def _run(
    settings: Settings,
    concurrency: int,
    beat: bool,
    flower: bool,
    api: bool,
    verbose: bool,
    stop: threading.Event,
    out: Output,
    err: Output,
) -> int:
    with services(settings, out) as urls:
        upgrade(urls["DATABASE_URL"])
        out.line("migrations   applied")
        procs = children(settings, concurrency, beat, flower, api)
        env = {**os.environ, **urls, "PYTHONUNBUFFERED": "1"}
        client = redis.Redis.from_url(urls["REDIS_URL"], socket_connect_timeout=2, socket_timeout=2)
        try:
            for child in procs:
                _start(child, env, settings, out if verbose else None)
            return _watch(settings, procs, client, stop, out, err, api, flower)
        finally:
            out.line("stopping the stack")
            _stop_all(procs, err)
            client.close()


def _watch(
    settings: Settings,
    procs: list[Child],
    client: redis.Redis,
    stop: threading.Event,
    out: Output,
    err: Output,
    api: bool,
    flower: bool,
) -> int:
    """Report each process as it becomes ready, then where to look; until told to stop
    (0) or a process dies (1)."""
    waiting = _watches(settings, procs, client)
    started = time.monotonic()
    summarised = False
    while not stop.wait(POLL_SECONDS):
        dead = [c for c in procs if c.process is not None and c.process.poll() is not None]
        if dead:
            for child in dead:
                _report_death(child, err)
            return 1
        for watch in list(waiting):
            note = watch.probe()
            if note is not None:
                waiting.remove(watch)
                late = f", after {time.monotonic() - started:.0f} s" if summarised else ""
                out.line(f"{watch.child.name:<{NAME_WIDTH}}ready ({note}{late})")
        if not summarised and (not waiting or time.monotonic() - started > READY_TIMEOUT_SECONDS):
            for watch in waiting:
                err.line(
                    f"{watch.child.name} is not ready after {READY_TIMEOUT_SECONDS} s "
                    f"({watch.missing}); its output is in {watch.child.log}"
                )
            for line in _where_to_look(settings, api, flower):
                out.line(line)
            summarised = True
    return 0


def _stop_all(procs: list[Child], err: Output) -> None:
    running = [c for c in procs if c.process is not None and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            err.line(f"{child.name} did not stop in {STOP_GRACE_SECONDS} s; killing it")
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
    for child in procs:
        if child.relay is not None:
            child.relay.join(timeout=5)  # the last lines into the log files
