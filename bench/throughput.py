"""Task throughput through real workers against a bare Celery floor, in the same run.

    python -m bench.throughput [--children 1,2,4] [--rounds 3] [--tasks 5000] [--latency 200]
    python -m bench.throughput --memory 100000 [--memory-children 2] [--memory-every 10000]

Each kind runs on a real ``celery worker`` subprocess, prefork pool with N children (every N
of ``--children``), log level WARNING:

- ``bare``: the floor, ``bench.bare_app`` (plain Celery: Redis broker, JSON, no result
  backend, late acks, prefetch 1) running a no-op.
- ``home``: ``automation.ping`` sent by name (``send_task``) with the production app, so
  routed to its home queue ``default``; the production worker
  (``celery -A worker worker --queues default,celery``, as ``automation up`` runs it).
- ``inbox``: the same sent to Celery's inbox queue (``send_task(..., queue="celery")``); the
  same worker takes it there and, since it also consumes ``default`` (ping's home), runs
  it there (a task homed on another queue would be forwarded: one more publish).
- ``bare_sql``: the floor of the ledger's work, in ``bench.bare_app``: the bare app claiming
  and completing a ``background_tasks`` row with the ledger's two statements, by plain
  psycopg (rows inserted in one statement, then one bare message per row). Not a target:
  it shows how much of the ledger's distance from ``bare`` is PostgreSQL's part.
- ``ledger``: bench/background.py's ledger no-op (``bench.ledger_noop``; the rows written
  with ``worker.ledger.enqueue_many`` in one transaction that publishes after commit) on
  ``celery -A bench.background_tasks worker --queues default``.

A round starts a fresh worker and waits until it is idle, then publishes all ``--tasks``
messages in one burst and times from the first publish (ledger: from the INSERTs) until
the last task is done. Every round runs the kinds, in a rotating order; the median
round is reported, and the ratios against bare are taken within this one run.

When the tasks are done is read from the broker, which costs the worker nothing: with late
acks a message is in its queue's Redis list or in the ``unacked`` hash until its task has
finished (a forwarded message is published home before the inbox copy is acked), so the
burst is done when those lists and that hash are empty (seen twice, 10 ms apart; one
Redis round trip per poll). Outside the timed part the bench then waits for each task's
``task_runs`` row (``status = 'success'``, polled every 0.1 s) and reports that as
"recorded/s": equal to tasks/s when the row is written on the task path, lower when it is
written later.

CPU is the worker's process tree (psutil): user + system of the main process, of its live
children, and of its reaped children (recycled every ``WORKER_MAX_TASKS_PER_CHILD``), read
idle before the burst and 0.3 s after the last row is recorded. PostgreSQL's and Redis'
own CPU is not in it.

Latency (``--latency K``, 0 to skip): on an idle production worker, K ``automation.ping``
one at a time, each timed from ``send_task`` to when its ``task_runs`` row is seen with
``finished_at`` set (polled every millisecond), 50 ms apart; p50 and p99. "stamped" is
``finished_at`` minus the wall-clock time of the send (same machine, same clock).

``--memory N`` (instead of all the above): N pings through one production worker with
``--memory-children`` children, published ``--memory-every`` at a time; after each batch
is done, the RSS of the worker's main process and of each child (children are replaced
every ``WORKER_MAX_TASKS_PER_CHILD`` tasks, so only the main process shows a slow leak).

Targets (ratios within one run): home/bare >= 0.6, inbox/bare >= 0.45, ledger/bare >= 0.5;
latency p50 < 20 ms.

BENCH_DATABASE_URL names a PostgreSQL server (the bench makes, migrates and drops its own
database; BENCH_KEEP=1 keeps it); BENCH_REDIS_URL a Redis database, default
redis://127.0.0.1:6379/5, flushed at the start and the end: give it one nothing else uses.
BENCH_SHOW_WORKER_LOG=1 prints the end of each worker's log.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.analytics import fresh_database, log
from worker.stack import celery_argv

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"

PING = "automation.ping"
LEDGER_TASK = "bench.ledger_noop"
LEDGER_TYPE = "ledger_noop"
HOME_QUEUE = "default"
INBOX_QUEUE = "celery"
KINDS = ("bare", "bare_sql", "home", "inbox", "ledger")
BARE_KINDS = ("bare", "bare_sql")
TARGETS = {"home": 0.6, "inbox": 0.45, "ledger": 0.5}
LATENCY_TARGET_MS = 20.0

START_TIMEOUT = 120.0  # a worker answers a control ping within this
STOP_GRACE_SECONDS = 30.0  # warm shutdown of an idle worker, then SIGKILL
IDLE_CPU_SECONDS = 0.025  # less CPU than this in 0.5 s: the worker is idle

# Redis keys of a queue's messages: one list per priority step, with the production app's
# separator (":") or kombu's default one ("\x06\x16").
PRIORITY_KEYS = [f"{sep}{step}" for sep in (":", "\x06\x16") for step in range(1, 10)]
UNACKED = "unacked"


def queue_keys(*queues: str) -> list[str]:
    return [key for q in queues for key in (q, *(q + suffix for suffix in PRIORITY_KEYS))]


# Every worker this process started, so that any way out stops them.
_workers: list[Worker] = []


class Worker:
    """One ``celery worker`` subprocess in its own session, with its process tree's figures."""

    def __init__(
        self,
        app_module: str | None,
        queues: list[str],
        children: int,
        log_dir: str,
        loglevel: str,
    ) -> None:
        self.children = children
        self.hostname = f"bench-{uuid.uuid4().hex[:8]}@throughput"
        options = [
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(children),
            "--queues",
            ",".join(queues),
            "--hostname",
            self.hostname,
            "--loglevel",
            loglevel,
        ]
        # The production worker exactly as the stack starts it; bench apps the same way.
        self.argv = (
            celery_argv(*options)
            if app_module is None
            else [sys.executable, "-m", "celery", "-A", app_module, *options]
        )
        self.log_path = Path(log_dir) / f"{self.hostname.partition('@')[0]}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def start(self, control_app: Any) -> None:
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own process group: the terminal's Ctrl-C reaches only us, and we stop
                # the whole tree.
                start_new_session=True,
            )
        _workers.append(self)
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while not control_app.control.ping(destination=[self.hostname], timeout=1.0):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not up in {START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.2)
        self.wait_idle()

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Until its children are all up and the tree uses (almost) no CPU."""
        deadline = time.monotonic() + timeout
        last = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_seconds()
            if now - last < IDLE_CPU_SECONDS and len(self._children()) >= self.children:
                return
            last = now
        log(f"worker {self.hostname} still busy after {timeout} s; measuring anyway")

    def _children(self) -> list[psutil.Process]:
        assert self.ps is not None
        try:
            return self.ps.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU of the main process, its live children and its reaped ones."""
        assert self.ps is not None
        for _ in range(20):
            before = self.ps.cpu_times()
            live = 0.0
            for child in self._children():
                try:
                    times = child.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                live += times.user + times.system
            after = self.ps.cpu_times()
            # A child reaped while we read would be counted twice or not at all: read again.
            if (before.children_user, before.children_system) == (
                after.children_user,
                after.children_system,
            ):
                return (
                    after.user + after.system + after.children_user + after.children_system + live
                )
            time.sleep(0.01)
        raise RuntimeError("the worker's children kept changing while its CPU was read")

    def rss(self) -> tuple[int, list[int]]:
        """Resident memory (bytes) of the main process and of each child."""
        assert self.ps is not None
        children = []
        for child in self._children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE:  # a replaced child, not reaped yet
                    children.append(child.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
        return self.ps.memory_info().rss, children

    def log_tail(self, chars: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL to its process group; no child outlives it."""
        process = self.process
        if process is None:
            return
        leftovers = self._children()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                log(f"worker {self.hostname} did not stop in {STOP_GRACE_SECONDS} s; killing it")
                # Not reaped yet, so its pid (the group's id) cannot have been reused.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        for child in leftovers:  # psutil checks identity: never another process by reused pid
            with suppress(psutil.NoSuchProcess):
                child.kill()
        if os.environ.get("BENCH_SHOW_WORKER_LOG"):
            print(self.log_tail(), file=sys.stderr)
        if self in _workers:
            _workers.remove(self)
        self.process = None


def stop_all_workers() -> None:
    for worker in list(_workers):
        try:
            worker.stop()
        except Exception as exc:  # keep stopping the others
            log(f"could not stop {worker.hostname}: {exc}")


@contextmanager
def running(worker: Worker, control_app: Any) -> Iterator[Worker]:
    try:
        worker.start(control_app)
        yield worker
    finally:
        worker.stop()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: workers stopped, DB dropped


class Broker:
    """Reads how many messages are still waiting or running, straight from Redis."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def claim(self, url: str) -> None:
        """Refuse a Redis database another client uses: two benches would eat each other's
        messages (and each flushes it). This connection stays open, so a later run refuses
        too."""
        db = int(self.client.connection_pool.connection_kwargs.get("db", 0))
        me = self.client.client_id()
        others = [c for c in self.client.client_list() if int(c["db"]) == db and int(c["id"]) != me]
        if others:
            raise SystemExit(
                f"{url}: {len(others)} other client(s) are connected to this Redis database "
                f"(another benchmark?); set BENCH_REDIS_URL to a free one"
            )

    def outstanding(self, keys: list[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        pipe.hlen(UNACKED)
        return sum(pipe.execute())

    def wait_drained(self, keys: list[str], timeout: float) -> float:
        """The monotonic time at which every message was acknowledged (seen twice)."""
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while True:
            left = self.outstanding(keys)
            now = time.monotonic()
            if left == 0:
                if empty_since is not None:
                    return empty_since
                empty_since = now
            else:
                empty_since = None
                if now > deadline:
                    raise RuntimeError(f"{left} messages still outstanding after {timeout} s")
            time.sleep(0.01)


def wait_until(probe: Callable[[], int], want: int, timeout: float, interval: float) -> float:
    deadline = time.monotonic() + timeout
    while (have := probe()) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {have} of {want} recorded in {timeout} s")
        time.sleep(interval)
    return time.monotonic()


@dataclass
class Round:
    rate: float  # tasks/s, first publish to last ack
    recorded_rate: float | None  # tasks/s, first publish to the last task_runs row
    cpu_per_task: float  # seconds of the worker's tree
    publish_seconds: float


class Bench:
    def __init__(self, url: str, broker: Broker, data_dir: str, args: argparse.Namespace):
        # Celery's own switch, set in every worker process: a sender does not SUBSCRIBE to
        # each task's result (with a Redis result backend send_task otherwise does, and
        # this bench never reads them). Results are still stored by the worker.
        from celery import _state

        _state._set_task_join_will_block(True)

        import bench.bare_app
        from bench.background_tasks import app  # the production app, plus the bench tasks

        self.app = app
        self.bare = bench.bare_app
        self.engine: Engine = create_engine(url)
        self.plain_url = make_url(url).set(drivername="postgresql").render_as_string(False)
        self.broker = broker
        self.data_dir = data_dir
        self.args = args
        self.track_ids: list[int] = []

    # -- workers ------------------------------------------------------------------------

    def worker(self, kind: str, children: int) -> Worker:
        if kind in BARE_KINDS:
            module, queues = "bench.bare_app", [self.bare.QUEUE]
        elif kind == "ledger":
            module, queues = "bench.background_tasks", [HOME_QUEUE]
        else:
            module, queues = None, [HOME_QUEUE, INBOX_QUEUE]
        return Worker(module, queues, children, self.data_dir, self.args.loglevel)

    def control_app(self, kind: str) -> Any:
        return self.bare.app if kind in BARE_KINDS else self.app

    # -- the kinds ---------------------------------------------------------------------

    def prepare(self, kind: str) -> None:
        with self.engine.begin() as conn:
            if kind in ("ledger", "bare_sql"):
                conn.execute(text("DELETE FROM background_tasks"))
            conn.execute(
                text("DELETE FROM task_runs WHERE task_name IN (:ping, :ledger)"),
                {"ping": PING, "ledger": LEDGER_TASK},
            )

    def publish(self, kind: str, n: int) -> None:
        if kind == "bare":
            with self.bare.app.producer_or_acquire() as producer:
                for _ in range(n):
                    self.bare.app.send_task(self.bare.TASK, producer=producer)
        elif kind == "bare_sql":
            with self.engine.begin() as conn:  # the rows, as enqueue_many writes them
                row_ids = list(
                    conn.scalars(
                        text(
                            "INSERT INTO background_tasks "
                            "(task_type, track_id, priority, enqueued_at, celery_task_id) "
                            "SELECT 'bare_sql', t, 0, now(), gen_random_uuid()::text "
                            "FROM unnest(CAST(:ids AS bigint[])) AS t RETURNING id"
                        ),
                        {"ids": self.track_ids[:n]},
                    )
                )
            with self.bare.app.producer_or_acquire() as producer:
                for row_id in row_ids:
                    self.bare.app.send_task(self.bare.SQL_TASK, args=(row_id,), producer=producer)
        elif kind == "ledger":
            from worker.ledger import enqueue_many

            with Session(self.engine) as session, session.begin():
                enqueue_many(session, self.app, LEDGER_TYPE, self.track_ids[:n])
        else:
            options = {"queue": INBOX_QUEUE} if kind == "inbox" else {}
            with self.app.producer_or_acquire() as producer:
                for _ in range(n):
                    self.app.send_task(PING, producer=producer, **options)

    def keys(self, kind: str) -> list[str]:
        if kind in BARE_KINDS:
            return queue_keys(self.bare.QUEUE)
        return queue_keys(HOME_QUEUE, INBOX_QUEUE)

    def recorded(self, task_name: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    text(
                        "SELECT count(*) FROM task_runs WHERE task_name = :name "
                        "AND status = 'success' AND finished_at IS NOT NULL"
                    ),
                    {"name": task_name},
                )
            )

    def completed_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    text("SELECT count(*) FROM background_tasks WHERE status = 'completed'")
                )
            )

    def one_round(self, kind: str, children: int) -> Round:
        n, timeout = self.args.tasks, self.args.timeout
        with running(self.worker(kind, children), self.control_app(kind)) as worker:
            self.prepare(kind)
            if self.broker.outstanding(self.keys(kind)):
                raise RuntimeError("messages left over from an earlier round")
            profiler = self.profiler(worker, kind, children)
            cpu_before = worker.cpu_seconds()
            start = time.monotonic()
            self.publish(kind, n)
            published = time.monotonic()
            done = self.broker.wait_drained(self.keys(kind), timeout)
            recorded_rate = None
            if kind not in BARE_KINDS:
                task_name = LEDGER_TASK if kind == "ledger" else PING
                if self.recorded(task_name) >= n:
                    recorded_at = done
                else:
                    recorded_at = wait_until(lambda: self.recorded(task_name), n, timeout, 0.1)
                recorded_rate = n / (recorded_at - start)
            time.sleep(0.3)  # children replaced at the end of the burst are counted whole
            cpu = worker.cpu_seconds() - cpu_before
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(timeout=60)
            if kind in ("ledger", "bare_sql") and (completed := self.completed_rows()) != n:
                raise RuntimeError(f"{kind}: {completed} of {n} rows completed")
        return Round(n / (done - start), recorded_rate, cpu / n, published - start)

    def profiler(self, worker: Worker, kind: str, children: int) -> subprocess.Popen[bytes] | None:
        """With ``--profile DIR``: py-spy samples the worker's tree for the round."""
        if not self.args.profile:
            return None
        assert worker.process is not None
        out = Path(self.args.profile) / f"{children}-{kind}-{time.strftime('%H%M%S')}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        profiler = subprocess.Popen(
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(worker.process.pid),
                "--subprocesses",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                # Only stacks holding the GIL: where CPU goes, not where threads wait.
                "--gil",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # attached before the first message
        return profiler

    # -- the runs -------------------------------------------------------------------------

    def seed_tracks(self, n: int) -> None:
        from bench.background import seed_tracks

        with self.engine.begin() as conn:
            self.track_ids = seed_tracks(conn, n)

    def throughput(self, children: int) -> dict[str, list[Round]]:
        kinds = self.args.kinds
        rounds: dict[str, list[Round]] = {kind: [] for kind in kinds}
        for index in range(self.args.rounds):
            order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
            for kind in order:
                result = self.one_round(kind, children)
                rounds[kind].append(result)
                recorded = (
                    ""
                    if result.recorded_rate is None
                    else f", recorded {result.recorded_rate:.0f}/s"
                )
                log(
                    f"{children} children, round {index + 1}, {kind}: {result.rate:.0f} tasks/s"
                    f"{recorded}, {result.cpu_per_task * 1000:.2f} CPU ms/task, "
                    f"published in {result.publish_seconds:.2f} s"
                )
        return rounds

    def latency(self, children: int) -> tuple[list[float], list[float]]:
        """(observed, stamped) seconds for each of --latency pings, one at a time."""
        observed: list[float] = []
        stamped: list[float] = []
        warmup = 5
        with (
            running(self.worker("home", children), self.app),
            psycopg.connect(self.plain_url, autocommit=True) as conn,
        ):
            self.prepare("home")
            for i in range(warmup + self.args.latency):
                wall, t0 = time.time(), time.perf_counter()
                task_id = self.app.send_task(PING).id
                deadline = t0 + 30
                while True:
                    row = conn.execute(
                        "SELECT finished_at FROM task_runs "
                        "WHERE task_id = %s AND finished_at IS NOT NULL LIMIT 1",
                        (task_id,),
                    ).fetchone()
                    if row is not None:
                        break
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"ping {task_id} not recorded in 30 s")
                    time.sleep(0.001)
                if i >= warmup:
                    observed.append(time.perf_counter() - t0)
                    stamped.append(row[0].timestamp() - wall)
                time.sleep(0.05)
        return observed, stamped

    def memory(self) -> None:
        total, every, children = self.args.memory, self.args.memory_every, self.args.memory_children
        mib = 1024 * 1024
        rows: list[tuple[int, float, float, int, float, float, float]] = []
        worker = self.worker("home", children)
        with running(worker, self.app):
            self.prepare("home")
            start = time.monotonic()
            done = 0
            main_rss, child_rss = worker.rss()
            rows.append((0, 0.0, main_rss / mib, len(child_rss), *_spread(child_rss, mib)))
            while done < total:
                batch = min(every, total - done)
                self.publish("home", batch)
                self.broker.wait_drained(self.keys("home"), self.args.timeout)
                done += batch
                # Every ping ran here and left its row (a stranger's worker would not).
                wait_until(lambda: self.recorded(PING), done, self.args.timeout, 0.1)
                time.sleep(0.5)  # let a child being replaced finish starting
                main_rss, child_rss = worker.rss()
                rows.append(
                    (
                        done,
                        time.monotonic() - start,
                        main_rss / mib,
                        len(child_rss),
                        *_spread(child_rss, mib),
                    )
                )
                log(f"memory: {done} tasks, main {main_rss / mib:.1f} MiB")
            elapsed = time.monotonic() - start
        print(
            f"\nmemory: {total} automation.ping through one worker with {children} prefork "
            f"children ({total / elapsed:.0f} tasks/s overall, every run recorded in task_runs); "
            f"children replaced every {self.app.conf.worker_max_tasks_per_child} tasks\n"
            f"RSS in MiB, sampled after each batch of {every} was done\n"
        )
        print(f"{'tasks':>8} {'s':>7} {'main':>8} {'children':>9} {'min':>7} {'max':>7} {'sum':>7}")
        for tasks, seconds, main, count, low, high, total_rss in rows:
            print(
                f"{tasks:>8} {seconds:>7.1f} {main:>8.1f} {count:>9} {low:>7.1f} {high:>7.1f} "
                f"{total_rss:>7.1f}"
            )


def _spread(values: list[int], unit: int) -> tuple[float, float, float]:
    if not values:
        return 0.0, 0.0, 0.0
    return min(values) / unit, max(values) / unit, sum(values) / unit


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def report(
    results: dict[int, dict[str, list[Round]]],
    latencies: dict[int, tuple[list[float], list[float]]],
    args: argparse.Namespace,
) -> None:
    print(
        f"\n{args.tasks} tasks a round, {args.rounds} rounds (median), one worker per round, "
        f"prefork; tasks/s from the first publish to the last ack; CPU of the worker's tree"
    )
    header = (
        f"{'children':>8}  {'kind':<7} {'tasks/s':>8} {'recorded/s':>10} {'CPU ms/task':>11} "
        f"{'x bare':>7} {'target':>7}  rounds (tasks/s), publish s"
    )
    print(header)
    print("-" * len(header))
    beside: dict[int, float] = {}
    for children, rounds in results.items():
        bare = statistics.median(r.rate for r in rounds["bare"])
        for kind in args.kinds:
            rates = [r.rate for r in rounds[kind]]
            rate = statistics.median(rates)
            recorded = [r.recorded_rate for r in rounds[kind] if r.recorded_rate is not None]
            recorded_text = f"{statistics.median(recorded):>10.0f}" if recorded else f"{'-':>10}"
            cpu = statistics.median(r.cpu_per_task for r in rounds[kind]) * 1000
            ratio = "" if kind == "bare" else f"{rate / bare:.2f}"
            if kind == "ledger" and "bare_sql" in rounds:
                bare_sql = statistics.median(r.rate for r in rounds["bare_sql"])
                beside[children] = rate / bare_sql
            target = f">={TARGETS[kind]}" if kind in TARGETS else ""
            verdict = ""
            if kind in TARGETS:
                verdict = " ok" if rate / bare >= TARGETS[kind] else " BELOW"
            publish = statistics.median(r.publish_seconds for r in rounds[kind])
            print(
                f"{children:>8}  {kind:<7} {rate:>8.0f} {recorded_text} {cpu:>11.2f} "
                f"{ratio:>7} {target:>7}  {', '.join(f'{r:.0f}' for r in rates)}; "
                f"{publish:.2f}{verdict}"
            )
    for children, ratio in beside.items():
        print(
            f"{children:>8} children: ledger / bare_sql {ratio:.2f} (the ledger's cost beside "
            f"PostgreSQL's part of it, done by a bare app)"
        )
    if latencies:
        print(
            f"\nlatency of one automation.ping on an idle worker, send to task_runs finished "
            f"({args.latency} sends; target p50 < {LATENCY_TARGET_MS:.0f} ms)"
        )
        for children, (observed, stamped) in latencies.items():
            p50 = quantile(observed, 50) * 1000
            print(
                f"{children:>8} children: p50 {p50:.1f} ms, p99 {quantile(observed, 99) * 1000:.1f}"
                f" ms (stamped: p50 {quantile(stamped, 50) * 1000:.1f} ms, p99 "
                f"{quantile(stamped, 99) * 1000:.1f} ms)"
                f"{' ok' if p50 < LATENCY_TARGET_MS else ' ABOVE'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", default="2", help="prefork children, e.g. 1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--latency", type=int, default=200, help="sequential pings; 0: none")
    parser.add_argument("--memory", type=int, default=0, help="run N pings, report RSS")
    parser.add_argument("--memory-children", type=int, default=2)
    parser.add_argument("--memory-every", type=int, default=10_000)
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="a subset of bare,home,inbox,ledger (bare first)"
    )
    parser.add_argument(
        "--profile", default="", help="DIR: py-spy's raw stacks of each round's worker there"
    )
    parser.add_argument("--loglevel", default="WARNING", help="the workers' log level")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for any wait")
    args = parser.parse_args()
    children_list = [int(part) for part in args.children.split(",") if part.strip()]
    args.kinds = [kind for kind in KINDS if kind in args.kinds.split(",")]
    if "bare" not in args.kinds:
        parser.error("--kinds must include bare: every ratio is against it")

    server = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    broker = Broker(redis_url)
    broker.claim(redis_url)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    atexit.register(stop_all_workers)
    with (
        fresh_database(server, keep=bool(os.environ.get("BENCH_KEEP"))) as url,
        tempfile.TemporaryDirectory() as data_dir,
    ):
        os.environ.update(
            DATABASE_URL=url, REDIS_URL=redis_url, BENCH_REDIS_URL=redis_url, DATA_DIR=data_dir
        )
        from db.migrate import upgrade

        upgrade(url)
        bench = Bench(url, broker, data_dir, args)
        bench.broker.client.flushdb()
        try:
            if args.memory:
                bench.memory()
                return
            bench.seed_tracks(args.tasks)
            results = {children: bench.throughput(children) for children in children_list}
            latencies = {}
            if args.latency:
                for children in children_list:
                    latencies[children] = bench.latency(children)
            report(results, latencies, args)
        finally:
            stop_all_workers()
            bench.broker.client.flushdb()
            bench.engine.dispose()


if __name__ == "__main__":
    main()
