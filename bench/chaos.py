"""Faults under load, with figures: lost, applied twice, time to recover, throughput after.

    python -m bench.chaos [--scenarios kill,redis,postgres,flood,partition] [--tasks 3000]
                          [--lease 60] [--outage 30] [--flood 20000] [--cut 150]
                          [--report FILE]

Each scenario runs on a stack of its own, made here: a PostgreSQL (embedded, on a free
port), a Redis that keeps nothing on disk (``--save "" --appendonly no``: the worst case,
and what a restart without persistence loses), and real ``celery worker`` subprocesses of
the production app plus the scenario's two tasks (``bench.chaos_tasks``), each in its own
process group, two children each, and one beat. Work is put in the way other services put it:
``background_tasks`` rows by plain SQL (the workers' dispatcher publishes them) and
messages sent by name with a bare Celery app.

- ``kill``: ``--tasks`` ledger rows. At a quarter done, one worker's whole process group
  is SIGKILLed (a host lost) and a replacement started, as a supervisor would; at half,
  one child of the other is SIGKILLed; at three quarters, the first again.
- ``redis``: ``--tasks`` ledger rows. At a quarter, a tenth as many ``chaos.echo`` are
  sent by name and at once Redis is SIGKILLed and started again, empty.
- ``postgres``: ``--tasks`` ledger rows. At a quarter, PostgreSQL is stopped for
  ``--outage`` seconds, then started.
- ``flood``: ``--flood`` messages by name, one in twenty malformed (not JSON, a JSON
  number, no properties, bad base64, an unknown task, arguments of the wrong type...), on
  two workers. Their main process's memory is read at each quarter.
- ``partition``: on a stack of its own whose three workers are three hosts in network
  namespaces (``bench/network.py``; skipped, saying why, where they cannot be made):
  ``--tasks`` ledger rows and 60 ``chaos.spotify`` calls of 3 searches each, under 429
  storms (the stand-in answers 3 requests 429 with Retry-After 2 s every 4 s). At a
  quarter done, the second host's link goes down for ``--cut`` seconds; when it comes
  back, as many rows again are added (more while it has done none), for the rate after.
  Beside the ledger's invariants: every Spotify call done, no window of the limit holding
  more requests than its budget and no request inside a Retry-After (from the 429's
  arrival plus 0.5 s, for requests already on the wire), as the stand-in saw them from
  all hosts; the cut host's rows done by the others while it was away, and it working
  again once back, its late acknowledgements and commits doing no harm.

Invariants, checked by tests/chaos on small loads: no ledger row lost (every one
``completed``), none applied twice (``chaos_effects`` holds one row per ledger row: the
work's own transaction writes it), none failed; workers stay up. Figures: rate in the
``--window`` seconds before the fault and in the same span after the stack is whole again
(as a share: the goal is at least 95%), how long until completions resumed, and until the
work in flight at the fault was all done (a killed worker's messages come back one
``--lease`` after its last renewal).

Messages lost with Redis are counted, not hidden: ``chaos.echo`` sent before the restart
and never run. A Redis that keeps nothing loses them (README, "When things fail").
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis
from celery import Celery

from bench.network import Host, Network, unavailable
from db.seed import SeedSpec, seed_url
from standins.spotify import SpotifyStandIn
from worker.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from worker.queues import PRIORITY_SEP, PRIORITY_STEPS
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
APP_MODULE = "bench.chaos_tasks"
# The ledger's and by-name work on default and celery; a fan-out and an aggregation on theirs.
QUEUES = "default,celery,playlists,stats"
START_TIMEOUT = 90.0


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the stack ---------------------------------------------------------------------------


def control_app(redis_url: str) -> Celery:
    """A Celery app that can ping our workers: the broker's key layout must match theirs
    (kombu keeps bindings as strings joined by ``sep``)."""
    return Celery(
        broker=redis_url,
        broker_transport_options={"sep": PRIORITY_SEP, "priority_steps": PRIORITY_STEPS},
    )


@dataclass
class Stack:
    """PostgreSQL, a volatile Redis and workers, all started and stopped here."""

    root: Path
    lease: float
    work_seconds: float = 0.02
    # With a network, workers run on its hosts and reach every service over their links.
    network: Network | None = None
    spotify_rpm: int = 600
    spotify_window: float = 5.0
    postgres: EmbeddedPostgres = field(init=False)
    spotify: SpotifyStandIn = field(init=False)
    redis_port: int = field(init=False)
    _redis: EmbeddedRedis = field(init=False)
    _beat: subprocess.Popen[bytes] | None = field(default=None, init=False)
    workers: list[Worker] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        listen = ("127.0.0.1",) if self.network is None else ("127.0.0.1", self.network.gateway)
        self.postgres = EmbeddedPostgres(
            self.root / "pg",
            free_port(),
            database="chaos",
            listen=listen,
            trust_network=None if self.network is None else self.network.cidr,
        )
        self.redis_port = free_port()
        self._redis = EmbeddedRedis(
            self.root / "redis", self.redis_port, keep_data=False, listen=listen
        )
        self.spotify = SpotifyStandIn(host=listen[-1], latency=0.005)

    @property
    def database_url(self) -> str:
        return self.postgres.url()

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def spotify_budget(self) -> int:
        """Requests per window the limiter admits, as the workers' settings give it."""
        return Settings(
            spotify_requests_per_minute=self.spotify_rpm,
            spotify_rate_window_seconds=self.spotify_window,
        ).spotify_rate_budget

    @property
    def services_host(self) -> str:
        """Where workers reach the services: the bridge's address on a network."""
        return "127.0.0.1" if self.network is None else self.network.gateway

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.postgres.port} user=postgres dbname=chaos"

    def env(self) -> dict[str, str]:
        host = self.services_host
        return {
            **os.environ,
            "DATABASE_URL": self.database_url.replace("127.0.0.1", host),
            "REDIS_URL": self.redis_url.replace("127.0.0.1", host),
            "SPOTIFY_CLIENT_ID": self.spotify.client_id,
            "SPOTIFY_CLIENT_SECRET": self.spotify.client_secret,
            "SPOTIFY_API_URL": self.spotify.api_url,
            "SPOTIFY_TOKEN_URL": self.spotify.token_url,
            "SPOTIFY_REQUESTS_PER_MINUTE": str(self.spotify_rpm),
            "SPOTIFY_RATE_WINDOW_SECONDS": str(self.spotify_window),
            "DATA_DIR": str(self.root / "data"),
            "ENVIRONMENT": "development",
            "WORKER_LEASE_SECONDS": str(self.lease),
            "CHAOS_WORK_SECONDS": str(self.work_seconds),
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> None:
        self.postgres.start()
        from db.migrate import upgrade

        upgrade(self.database_url)
        self.sql(
            "CREATE TABLE IF NOT EXISTS chaos_effects (background_task_id bigint NOT NULL);"
            "CREATE TABLE IF NOT EXISTS chaos_echoes (n integer PRIMARY KEY);"
            "CREATE TABLE IF NOT EXISTS chaos_calls (n integer PRIMARY KEY)"
        )
        self.spotify.start()
        if self.network is not None:
            for number in (1, 2, 3):
                self.network.add_host(f"host{number}")
        self.start_redis()
        self.start_beat()

    def start_beat(self) -> None:
        """Beat, as production runs it: ``cleanup.stuck_tasks`` every minute is the rescue."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        with (self.root / "beat.log").open("ab") as output:
            self._beat = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", APP_MODULE, "beat", "--loglevel", "INFO"],
                env=self.env(),
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start_redis(self) -> None:
        self._redis.start()

    def kill_redis(self) -> None:
        self._redis.kill()

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, socket_connect_timeout=2, socket_timeout=10)

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=2) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def reset(self) -> None:
        """Empty tables and Redis between scenarios (the workers are stopped first)."""
        self.stop_workers()
        self.sql(
            "TRUNCATE background_tasks, chaos_effects, chaos_echoes, chaos_calls, task_runs, "
            "task_run_commits, dead_letters, broker_resets, tracks, artists, users CASCADE"
        )
        with contextlib.closing(self.redis()) as client:
            client.flushall()
        self.spotify.reset_log()

    def start_worker(self, host: Host | None = None) -> Worker:
        name = f"chaos-{uuid.uuid4().hex[:6]}"
        if host is None:
            worker = Worker(self, f"{name}@host{len(self.workers) + 1}")
        else:
            # %h: the worker names itself after its host's own hostname.
            worker = Worker(self, f"{name}@{host.name}", host=host, argv_name=f"{name}@%h")
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()

    def stop(self) -> None:
        self.stop_workers()
        if self._beat is not None and self._beat.poll() is None:
            self._beat.terminate()
            self._beat.wait(timeout=30)
        self.kill_redis()
        self.spotify.stop()
        with contextlib.suppress(Exception):
            self.postgres.stop()


class Worker:
    """One ``celery worker`` (prefork, two children) in its own process group."""

    def __init__(
        self, stack: Stack, hostname: str, host: Host | None = None, argv_name: str | None = None
    ) -> None:
        self.stack = stack
        self.hostname = hostname
        self.host = host
        self._argv_name = argv_name or hostname
        self.log_path = stack.root / f"{hostname.replace('@', '_')}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "celery", "-A", APP_MODULE, "worker",
            "--pool", "prefork", "--concurrency", "2", "--queues", QUEUES,
            "--hostname", self._argv_name, "--loglevel", "WARNING",
        ]  # fmt: skip
        if self.host is not None:
            argv = self.host.command(argv)
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                argv,
                env=self.stack.env(),
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        control = control_app(self.stack.redis_url)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while not self._answers(control):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {self.hostname} did not start:\n{self.tail()}")
        finally:
            control.close()

    def _answers(self, control: Celery) -> bool:
        try:
            return bool(control.control.ping(destination=[self.hostname], timeout=0.5))
        except (redis.ConnectionError, OSError):  # a connection left over from a restart
            time.sleep(0.2)
            return False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            return psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def rss_mib(self) -> float:
        assert self.process is not None
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def kill(self) -> None:
        """SIGKILL to the whole process group: the host is gone, parent and children."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def kill_child(self) -> None:
        children = self.children()
        if children:
            children[0].kill()

    def stop(self) -> None:
        """Between scenarios and at the end: what it holds is moot by then (the next
        scenario starts from empty tables and an empty Redis), so no warm shutdown, which
        took 11 s a worker."""
        if self.process is None or self.process.poll() is not None:
            return
        self.kill()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# -- load and measurement ----------------------------------------------------------------


def add_ledger_rows(stack: Stack, count: int) -> None:
    """``count`` tracks and a ``chaos.work`` row each, by plain SQL, in one transaction."""
    stack.sql(
        "WITH a AS (INSERT INTO artists (name) VALUES ('Chaos') RETURNING id), "
        "t AS (INSERT INTO tracks (title, artist_id, genre) "
        "      SELECT 'track ' || n, a.id, 'rock' FROM a, generate_series(1, %(count)s) n "
        "      RETURNING id) "
        "INSERT INTO background_tasks (task_type, track_id) SELECT 'work', id FROM t",
        {"count": count},
    )


@dataclass
class Ledger:
    completed: int
    failed: int
    applied: int
    twice: int


def ledger_state(stack: Stack) -> Ledger:
    ((completed, failed),) = stack.sql(
        "SELECT count(*) FILTER (WHERE status = 'completed'), "
        "count(*) FILTER (WHERE status = 'failed') FROM background_tasks WHERE task_type = 'work'"
    )
    ((applied, twice),) = stack.sql(
        "SELECT count(*), count(*) FILTER (WHERE n > 1) FROM "
        "(SELECT count(*) AS n FROM chaos_effects GROUP BY background_task_id) e"
    )
    return Ledger(completed, failed, applied, twice)


class Sampler(threading.Thread):
    """Counts finished work every 0.2 s; unreachable PostgreSQL reads as no progress."""

    def __init__(self, probe: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        last = 0
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                last = self.probe()
            self.samples.append((time.monotonic(), last))
            self._halt.wait(0.2)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def count_at(self, moment: float) -> int:
        before = [n for t, n in self.samples if t <= moment]
        return before[-1] if before else 0

    def rate(self, start: float, end: float) -> float:
        return (self.count_at(end) - self.count_at(start)) / max(end - start, 1e-9)

    def first_progress_after(self, moment: float) -> float | None:
        base = self.count_at(moment)
        return next((t for t, n in self.samples if t > moment and n > base), None)


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if probe():
                return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


@dataclass
class Result:
    scenario: str
    load: str
    fault: str
    counts: dict[str, int]
    rate_before: float | None = None
    rate_after: float | None = None
    rate_next: float | None = None
    resumed_after: float | None = None
    all_done_after: float | None = None
    in_flight_done_after: float | None = None
    back_at_work_after: float | None = None  # a cut host's first completion once back
    notes: list[str] = field(default_factory=list)
    workers_alive: bool = True

    @property
    def share_after(self) -> float | None:
        if not self.rate_before or self.rate_after is None:
            return None
        return self.rate_after / self.rate_before

    def lines(self) -> list[str]:
        def seconds(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} s"

        share = self.share_after
        return [
            f"### {self.scenario}",
            f"- load: {self.load}",
            f"- fault: {self.fault}",
            "- counts: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            *(
                [f"- rate: {self.rate_after or 0:.1f} messages/s, sending included"]
                if self.rate_before is None
                else [
                    f"- rate before: {self.rate_before:.1f}/s, after: {self.rate_after or 0:.1f}/s"
                    + ("" if share is None else f" ({share:.0%} of before)")
                    + (
                        ""
                        if self.rate_next is None or not self.rate_before
                        else f", in the next window {self.rate_next:.1f}/s "
                        f"({self.rate_next / self.rate_before:.0%})"
                    ),
                    f"- completions resumed {seconds(self.resumed_after)} after the stack was "
                    f"whole; every row done {seconds(self.all_done_after)} after the fault"
                    + (
                        ""
                        if self.in_flight_done_after is None
                        else f"; the rows a lost host held, {seconds(self.in_flight_done_after)}"
                    ),
                ]
            ),
            f"- workers alive at the end: {self.workers_alive}",
            *(f"- {note}" for note in self.notes),
        ]


def _ledger_counts(stack: Stack, total: int) -> dict[str, int]:
    state = ledger_state(stack)
    return {
        "rows": total,
        "completed": state.completed,
        "lost": total - state.completed - state.failed,
        "failed": state.failed,
        "applied twice": state.twice,
    }


def _run_ledger_scenario(
    stack: Stack,
    total: int,
    fault: Callable[[], str],
    settle_timeout: float,
    after: Callable[[], None] | None = None,
    also: Callable[[], None] | None = None,
) -> tuple[Sampler, float, float, float, str]:
    """Start two workers, add ``total`` rows (and call ``also``, more load), call ``fault``
    at a quarter done, then ``after`` (more faults, later in the run); returns the sampler,
    when the fault began, when the stack was whole again, when every row was done, and what
    the fault was."""
    stack.start_worker()
    stack.start_worker()
    sampler = Sampler(lambda: ledger_state(stack).completed)
    sampler.start()
    add_ledger_rows(stack, total)
    if also is not None:
        also()
    wait_until(lambda: ledger_state(stack).completed >= total // 4, settle_timeout, "a quarter")
    began = time.monotonic()
    description = fault()
    whole = time.monotonic()
    if after is not None:
        after()
    done = wait_until(
        lambda: ledger_state(stack).completed >= total, settle_timeout, "every row done"
    )
    time.sleep(1.0)
    sampler.stop()
    return sampler, began, whole, done, description


def _rates(result: Result, sampler: Sampler, began: float, whole: float, window: float) -> None:
    result.rate_before = sampler.rate(began - window, began)
    resumed = sampler.first_progress_after(whole)
    result.resumed_after = None if resumed is None else max(0.0, resumed - whole)
    start = resumed if resumed is not None else whole
    result.rate_after = sampler.rate(start, start + window)
    # The window after that: whether a dip right after recovery is only a catching-up.
    result.rate_next = sampler.rate(start + window, start + 2 * window)


# A day's listening, small enough to seed in seconds: the aggregation and the playlists'
# fan-out then run for long enough that the kills find them in flight.
FAMILY_SEED = SeedSpec(users=300, tracks=2000, plays=60_000, listens=0)


@dataclass
class Families:
    """An aggregation sent by name beside the ledger's load, and the playlists fan-out
    once it succeeded (playlists are built from its figures), as the schedule orders them."""

    aggregate: str = ""
    fan_out: str = ""
    sent_at: float = 0.0

    def send(self, stack: Stack) -> None:
        self.sent_at = time.monotonic()
        self.aggregate = self._send(stack, "listening.aggregate", {})
        threading.Thread(target=self._fan_out_after, args=(stack,), daemon=True).start()

    def _fan_out_after(self, stack: Stack) -> None:
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: self.succeeded(stack, self.aggregate), 600, "aggregation")
            self.fan_out = self._send(stack, "playlists.generate_all", {"force": True})

    @staticmethod
    def _send(stack: Stack, name: str, kwargs: dict[str, Any]) -> str:
        sender = Celery(broker=stack.redis_url)
        try:
            return str(sender.send_task(name, kwargs=kwargs).id)
        finally:
            sender.close()

    def succeeded(self, stack: Stack, task_id: str) -> bool:
        # A fan-out's fan-in finishes under the fan-out's own task id.
        return bool(
            stack.sql(
                "SELECT 1 FROM task_runs WHERE task_id = %s AND status = 'success'", (task_id,)
            )
        )

    def counts(self, stack: Stack, timeout: float) -> dict[str, int]:
        aggregated = wait_until(
            lambda: self.succeeded(stack, self.aggregate), timeout, "aggregation succeeded"
        )
        fanned_in = wait_until(
            lambda: bool(self.fan_out) and self.succeeded(stack, self.fan_out),
            timeout,
            "fan-out's fan-in succeeded",
        )
        done = {"aggregation": aggregated - self.sent_at, "fan-out": fanned_in - self.sent_at}
        ((listeners, stats, playlists, twice),) = stack.sql(
            "SELECT (SELECT count(DISTINCT user_id) FROM play_history), "
            "(SELECT count(*) FROM user_listening_stats), "
            "(SELECT count(*) FROM smart_playlists), "
            "(SELECT count(*) FROM (SELECT 1 FROM smart_playlists "
            " GROUP BY user_id, playlist_type HAVING count(*) > 1) d)"
        )
        return {
            "listeners": listeners,
            "users with stats": stats,
            "playlists": playlists,
            "playlists twice": twice,
            "aggregation done after (s)": round(done["aggregation"]),
            "fan-out done after (s)": round(done["fan-out"]),
        }


def scenario_kill(stack: Stack, total: int, window: float, settle_timeout: float) -> Result:
    """Whole workers and single children SIGKILLed under a ledger backlog, an aggregation
    and a playlists fan-out."""
    held: list[tuple[set[int], float]] = []  # each killed host's rows, and when it died
    kills: list[str] = []
    seed_url(stack.database_url, FAMILY_SEED)
    families = Families()

    def kill_host(worker: Worker) -> None:
        rows = stack.sql(
            "SELECT id FROM background_tasks WHERE status = 'processing' AND worker_host = %s",
            (worker.hostname,),
        )
        held.append(({r[0] for r in rows}, time.time()))
        worker.kill()
        stack.workers.remove(worker)
        stack.start_worker()  # a supervisor's restart, with a new identity
        kills.append(f"host {worker.hostname} (held {len(rows)} rows)")

    def first_kill() -> str:
        kill_host(stack.workers[0])
        return kills[0]

    def later_kills() -> None:
        wait_until(lambda: ledger_state(stack).completed >= total // 2, settle_timeout, "half")
        stack.workers[-1].kill_child()
        kills.append("one child of a worker")
        wait_until(lambda: ledger_state(stack).completed >= 3 * total // 4, settle_timeout, "3/4")
        kill_host(stack.workers[0])

    sampler, began, whole, done, _ = _run_ledger_scenario(
        stack,
        total,
        first_kill,
        settle_timeout,
        after=later_kills,
        also=lambda: families.send(stack),
    )
    result = Result(
        "kill",
        f"{total} ledger rows (chaos.work), listening.aggregate then playlists.generate_all "
        f"(force) over {FAMILY_SEED.plays} plays of {FAMILY_SEED.users} users, "
        "2 workers x 2 children",
        "SIGKILL: " + "; ".join(kills),
        _ledger_counts(stack, total) | families.counts(stack, settle_timeout),
        workers_alive=all(w.alive for w in stack.workers),
    )
    _rates(result, sampler, began, whole, window)
    result.all_done_after = done - began
    # The slowest of the killed hosts' rows: from its kill to its completion.
    waits = []
    for ids, killed_at in held:
        if ids:
            (finished,) = stack.sql(
                "SELECT extract(epoch FROM max(completed_at)) FROM background_tasks "
                "WHERE id = ANY(%s)",
                (sorted(ids),),
            )[0]
            waits.append(float(finished) - killed_at)
    result.in_flight_done_after = max(waits) if waits else None
    if not waits:
        result.notes.append("the killed workers held no row at the moments they died")
    return result


def send_echoes(stack: Stack, numbers: range) -> None:
    """``chaos.echo`` by name to Celery's default queue, as another service sends."""
    sender = Celery(broker=stack.redis_url)
    try:
        with sender.producer_or_acquire() as producer:
            for n in numbers:
                sender.send_task("chaos.echo", args=[n], producer=producer)
    finally:
        sender.close()


def scenario_redis(stack: Stack, total: int, window: float, settle_timeout: float) -> Result:
    """Redis SIGKILLed and restarted empty under a ledger backlog and by-name messages."""
    echoes = max(10, total // 10)

    def fault() -> str:
        # Sent just before: most still wait behind the ledger's backlog when Redis dies.
        send_echoes(stack, range(echoes))
        stack.kill_redis()
        time.sleep(1.0)
        stack.start_redis()
        return (
            f"{echoes} chaos.echo sent by name, then at once Redis SIGKILLed and restarted "
            "after 1 s with no data"
        )

    sampler, began, whole, done, description = _run_ledger_scenario(
        stack, total, fault, settle_timeout
    )
    echoed = stack.sql("SELECT count(*) FROM chaos_echoes")[0][0]
    resets = stack.sql("SELECT count(*), coalesce(sum(ledger_republished), 0) FROM broker_resets")
    counts = _ledger_counts(stack, total)
    counts |= {
        "echo sent": echoes,
        "echo run": echoed,
        "echo lost with Redis": echoes - echoed,
        "broker resets recorded": resets[0][0],
        "ledger rows republished": resets[0][1],
    }
    result = Result(
        "redis",
        f"{total} ledger rows and {echoes} chaos.echo by name, 2 workers x 2 children",
        description,
        counts,
        workers_alive=all(w.alive for w in stack.workers),
    )
    _rates(result, sampler, began, whole, window)
    result.all_done_after = done - began
    result.notes.append(
        "a broker reset is also recorded when a worker first meets a new Redis (no epoch "
        "yet): the scenario's start counts as one"
    )
    return result


def scenario_postgres(
    stack: Stack, total: int, window: float, outage: float, settle_timeout: float
) -> Result:
    """PostgreSQL stopped for ``outage`` seconds under a ledger backlog."""

    def fault() -> str:
        stack.postgres.stop()
        time.sleep(outage)
        stack.postgres.start()
        return f"PostgreSQL stopped (fast shutdown) for {outage:.0f} s, then started"

    sampler, began, whole, done, description = _run_ledger_scenario(
        stack, total, fault, settle_timeout
    )
    result = Result(
        "postgres",
        f"{total} ledger rows (chaos.work), 2 workers x 2 children",
        description,
        _ledger_counts(stack, total),
        workers_alive=all(w.alive for w in stack.workers),
    )
    _rates(result, sampler, began, whole, window)
    result.all_done_after = done - began
    return result


@dataclass
class SpotifyLog:
    """What the stand-in saw: the limit and every Retry-After, checked across hosts."""

    requests: int
    rate_limited: int
    busiest_window: int  # most API requests that arrived within any one window
    inside_retry_after: int  # arrived after a 429's grace and before its Retry-After ran out
    by_host: dict[str, int]


# A request already sent when another host got its 429 cannot be called back; one that
# arrives this long after the 429 was sent after the pause was known.
RETRY_AFTER_GRACE = 0.5


def spotify_log(stack: Stack, retry_after: float) -> SpotifyLog:
    api = sorted(stack.spotify.recorded("/v1/"), key=lambda r: r.at)
    times = [r.at for r in api]
    busiest, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= stack.spotify_window:
            start += 1
        busiest = max(busiest, end - start + 1)
    inside = 0
    for refused in (r for r in api if r.status == 429):
        pause_ends = refused.at + retry_after
        inside += sum(1 for t in times if refused.at + RETRY_AFTER_GRACE < t < pause_ends)
    by_host: dict[str, int] = {}
    for request in api:
        by_host[request.client] = by_host.get(request.client, 0) + 1
    return SpotifyLog(len(api), sum(r.status == 429 for r in api), busiest, inside, by_host)


class Storm(threading.Thread):
    """Every ``every`` seconds the stand-in answers the next few API requests 429."""

    def __init__(self, standin: SpotifyStandIn, every: float, retry_after: int) -> None:
        super().__init__(daemon=True)
        self.standin, self.every, self.retry_after = standin, every, retry_after
        self.bursts = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.standin.rate_limit_next(self.retry_after, times=3)
            self.bursts += 1

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _completed_by(stack: Stack, worker: Worker, since: float) -> int:
    (count,) = stack.sql(
        "SELECT count(*) FROM background_tasks WHERE worker_host = %s "
        "AND completed_at > to_timestamp(%s)",
        (worker.hostname, since),
    )[0]
    return int(count)


def _unfinished(stack: Stack) -> int:
    (count,) = stack.sql(
        "SELECT count(*) FROM background_tasks WHERE status IN ('pending', 'processing')"
    )[0]
    return int(count)


def _cut_off(stack: Stack, victim: Worker, seconds: float) -> tuple[set[int], float | None]:
    """Cut ``victim``'s host off for ``seconds``; the rows it held then, and how soon after
    the cut the others had completed them all (None: not while it was away)."""
    assert stack.network is not None and victim.host is not None
    held = {
        row[0]
        for row in stack.sql(
            "SELECT id FROM background_tasks WHERE status = 'processing' AND worker_host = %s",
            (victim.hostname,),
        )
    }
    began = time.monotonic()
    stack.network.cut(victim.host)
    held_done: float | None = None
    while time.monotonic() - began < seconds:
        if held_done is None and held:
            (pending,) = stack.sql(
                "SELECT count(*) FROM background_tasks WHERE id = ANY(%s) "
                "AND status <> 'completed'",
                (sorted(held),),
            )[0]
            if pending == 0:
                held_done = time.monotonic() - began
        time.sleep(0.5)
    stack.network.heal(victim.host)
    return held, held_done


def _load_until_back_at_work(
    stack: Stack, victim: Worker, healed_at: float, rows: int, timeout: float
) -> int:
    """The load the three hosts share again (the rate after is measured on it), and more
    while the returning host has done none, so "back at work" is measured, not missed.
    Returns how many rows were added."""
    add_ledger_rows(stack, rows)
    added = rows
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _completed_by(stack, victim, healed_at):
        if _unfinished(stack) < rows // 4:
            add_ledger_rows(stack, rows // 2)
            added += rows // 2
        time.sleep(0.5)
    return added


def send_spotify_calls(stack: Stack, calls: int, searches: int) -> None:
    sender = Celery(broker=stack.redis_url)
    try:
        with sender.producer_or_acquire() as producer:
            for n in range(calls):
                sender.send_task("chaos.spotify", args=[n, searches], producer=producer)
    finally:
        sender.close()


def scenario_partition(
    stack: Stack,
    total: int,
    window: float,
    cut: float,
    settle_timeout: float,
    calls: int = 60,
    searches: int = 3,
) -> Result:
    """Three hosts share a ledger backlog and Spotify calls under 429 storms; one host is
    cut off from everything for ``cut`` seconds, then comes back."""
    network = stack.network
    assert network is not None, "the partition scenario needs a stack with a network"
    workers = [stack.start_worker(host) for host in network.hosts]
    victim = workers[1]
    assert victim.host is not None
    sampler = Sampler(lambda: ledger_state(stack).completed)
    sampler.start()
    storm = Storm(stack.spotify, every=4.0, retry_after=2)
    storm.start()
    add_ledger_rows(stack, total)
    send_spotify_calls(stack, calls, searches)
    wait_until(lambda: ledger_state(stack).completed >= total // 4, settle_timeout, "a quarter")
    if (queued := _unfinished(stack)) < total // 2:
        # The work must outlast the cut, or the host comes back to nothing to do.
        log(f"only {queued} rows left at the cut: the host may return to an empty queue")

    began = time.monotonic()
    held, held_done = _cut_off(stack, victim, cut)
    whole = time.monotonic()
    healed_at = time.time()
    added = _load_until_back_at_work(stack, victim, healed_at, total, settle_timeout / 2)
    total += added

    done = wait_until(
        lambda: ledger_state(stack).completed >= total, settle_timeout, "every row done"
    )
    wait_until(
        lambda: stack.sql("SELECT count(*) FROM chaos_calls")[0][0] >= calls,
        settle_timeout,
        "every Spotify call done",
    )
    storm.stop()
    time.sleep(1.0)
    sampler.stop()
    (after_heal, back_at_work) = stack.sql(
        "SELECT count(*), extract(epoch FROM min(completed_at)) - %s FROM background_tasks "
        "WHERE worker_host = %s AND completed_at > to_timestamp(%s)",
        (healed_at, victim.hostname, healed_at),
    )[0]
    spotify = spotify_log(stack, storm.retry_after)
    counts = _ledger_counts(stack, total) | {
        "rows the cut host held": len(held),
        "rows it completed after it came back": after_heal,
        "spotify calls": calls,
        "spotify calls done": stack.sql("SELECT count(*) FROM chaos_calls")[0][0],
        "API requests": spotify.requests,
        "429s": spotify.rate_limited,
        "429 bursts scripted": storm.bursts,
        "most requests in one window": spotify.busiest_window,
        "budget per window": stack.spotify_budget,
        "requests inside a Retry-After": spotify.inside_retry_after,
    }
    result = Result(
        "partition",
        f"{total - added} ledger rows (chaos.work), {added} more as the cut host returns, "
        f"and {calls} chaos.spotify x {searches} searches "
        f"(Spotify limit {stack.spotify_rpm}/min, counted per {stack.spotify_window:.0f} s), "
        f"3 hosts (network namespaces) x 2 children; 3 requests answered 429 "
        f"(Retry-After 2 s) every 4 s",
        f"{victim.hostname}'s link down for {cut:.0f} s, then up again",
        counts,
        workers_alive=all(w.alive for w in workers),
    )
    _rates(result, sampler, began, whole, window)
    result.all_done_after = done - began
    result.in_flight_done_after = held_done
    if back_at_work is not None:
        result.back_at_work_after = float(back_at_work)
        result.notes.append(
            f"the cut host completed its first row {float(back_at_work):.1f} s after its link "
            "came back"
        )
    if held and held_done is None:
        result.notes.append("the rows the cut host held were not all done while it was cut off")
    result.notes.append(
        "API requests by host: "
        + ", ".join(f"{host} {n}" for host, n in sorted(spotify.by_host.items()))
    )
    return result


MALFORMED: list[Callable[[random.Random], bytes]] = [
    lambda r: b"not json {" + bytes([r.randrange(256)]),
    lambda r: json.dumps(r.randrange(1000)).encode(),
    lambda r: json.dumps({"body": "", "headers": {}}).encode(),
    lambda r: json.dumps(_envelope("chaos.echo", body=b"%%%", raw_base64="%%%")).encode(),
    lambda r: json.dumps(_envelope(f"no.such_task_{r.randrange(9)}", body=None)).encode(),
    lambda r: json.dumps(_envelope("chaos.echo", body=json.dumps([["x"], {}, {}]))).encode(),
    lambda r: json.dumps(_envelope("chaos.echo", body=json.dumps({"a": 1}))).encode(),
]


def _envelope(task: str, body: Any, raw_base64: str | None = None) -> dict[str, Any]:
    task_id = str(uuid.uuid4())
    encoded = body.encode() if isinstance(body, str) else json.dumps([[1], {}, {}]).encode()
    return {
        "body": raw_base64 or base64.b64encode(encoded).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": task_id, "retries": 0},
        "properties": {
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "delivery_tag": str(uuid.uuid4()),
            "body_encoding": "base64",
            "priority": 0,
        },
    }


def scenario_flood(stack: Stack, count: int, settle_timeout: float, seed: int = 7) -> Result:
    """``count`` by-name messages, one in twenty malformed, on two workers."""
    draw = random.Random(seed)
    workers = [stack.start_worker(), stack.start_worker()]
    client = stack.redis()
    good = 0
    memory: list[str] = []
    quarter = max(1, count // 4)
    start = time.monotonic()
    sender = Celery(broker=stack.redis_url)
    with sender.producer_or_acquire() as producer:
        for i in range(count):
            if draw.random() < 0.05:
                client.lpush("celery", draw.choice(MALFORMED)(draw))
            else:
                sender.send_task("chaos.echo", args=[good], producer=producer)
                good += 1
            if (i + 1) % quarter == 0:
                memory.append(" / ".join(f"{w.rss_mib():.0f}" for w in workers if w.alive))
    sender.close()
    malformed = count - good

    def settled() -> tuple[int, int, int]:
        ran = stack.sql("SELECT count(*) FROM chaos_echoes")[0][0]
        dead = stack.sql("SELECT count(*) FROM dead_letters")[0][0]
        # A well-formed message with arguments of the wrong type runs, and fails once.
        refused = stack.sql(
            "SELECT count(*) FROM task_runs WHERE task_name = 'chaos.echo' AND status = 'failure'"
        )[0][0]
        return ran, dead, refused

    def all_settled() -> bool:
        ran, dead, refused = settled()
        return ran >= good and dead + refused >= malformed

    wait_until(
        all_settled,
        settle_timeout,
        "every message run, refused or kept as a dead letter",
    )
    elapsed = time.monotonic() - start
    memory.append(" / ".join(f"{w.rss_mib():.0f}" for w in workers if w.alive))
    ran, dead, refused = settled()
    client.close()
    result = Result(
        "flood",
        f"{count} messages by name to Celery's default queue, {malformed} malformed",
        f"malformed messages mixed in (seed {seed})",
        {
            "good sent": good,
            "good run": ran,
            "malformed": malformed,
            "dead letters": dead,
            "refused (bad arguments, failed once)": refused,
        },
        workers_alive=all(w.alive for w in workers),
    )
    result.rate_after = count / elapsed
    result.notes.append(
        "worker main process RSS (MiB, host1 / host2) at each quarter and at the end: "
        + "; ".join(memory)
    )
    return result


@contextlib.contextmanager
def stack(lease: float, work_seconds: float = 0.02, hosts: bool = False) -> Iterator[Stack]:
    """The stack; with ``hosts``, its workers run on three hosts of a virtual network."""
    root = Path(tempfile.mkdtemp(prefix="automation-chaos-"))
    network = Network().open() if hosts else None
    made = Stack(root, lease=lease, work_seconds=work_seconds, network=network)
    try:
        made.start()
        yield made
    finally:
        made.stop()
        if network is not None:
            network.close()
        if not os.environ.get("CHAOS_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenarios", default="kill,redis,postgres,flood,partition")
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--flood", type=int, default=20000)
    parser.add_argument("--cut", type=float, default=150.0)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    # A SIGTERM (timeout, kill) unwinds like Ctrl-C, so the stack's processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settle = max(600.0, 5 * args.lease)
    results: list[Result] = []
    names = args.scenarios.split(",")
    if "partition" in names:
        names.remove("partition")
        reason = unavailable()
        if reason is not None:
            log(f"scenario partition skipped: {reason}")
        else:
            log("scenario partition")
            with stack(args.lease, hosts=True) as made:
                made.reset()
                results.append(scenario_partition(made, args.tasks, args.window, args.cut, settle))
            print("\n".join(results[-1].lines()), flush=True)
    if names:
        with stack(args.lease) as made:
            for name in names:
                made.reset()
                log(f"scenario {name}")
                if name == "kill":
                    results.append(scenario_kill(made, args.tasks, args.window, settle))
                elif name == "redis":
                    results.append(scenario_redis(made, args.tasks, args.window, settle))
                elif name == "postgres":
                    results.append(
                        scenario_postgres(made, args.tasks, args.window, args.outage, settle)
                    )
                elif name == "flood":
                    results.append(scenario_flood(made, args.flood, settle))
                else:
                    raise SystemExit(f"unknown scenario {name!r}")
                print("\n".join(results[-1].lines()), flush=True)
    report = [
        "# Chaos report",
        f"`python -m bench.chaos {' '.join(sys.argv[1:])}` (lease {args.lease:.0f} s)",
        "",
    ]
    for result in results:
        report += [*result.lines(), ""]
    if args.report:
        args.report.write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
