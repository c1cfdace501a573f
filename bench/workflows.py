"""Event workflows at scale: what the status trigger adds to a job's UPDATE, and executions
per second through real workers against a bare Celery floor, in the same run.

    python -m bench.workflows [--changes 10000] [--workflows 1000] [--matching 100]
                              [--updates 1000] [--trigger-rounds 5] [--bulk 10000]
                              [--rounds 1] [--commit-size 100] [--children 2]
                              [--kinds production,bare] [--skip trigger|throughput]
    python -m bench.workflows --quick    # a smoke run of about a minute and a half

The issue's target: "10,000 status changes against 1,000 workflows of which 100 match:
executions per second through real workers, and the cost the trigger adds to the job
table's UPDATE (with and without the trigger, same run): at most 1.3x for the update."

The workflows. ``--workflows`` rules are saved with ``tasks.workflows.store.create``, as
the CLI and the API save them, on a fresh migrated database (``bench_wf_<hex>`` on
BENCH_DATABASE_URL's server, dropped at the end unless BENCH_KEEP=1). ``--matching`` users
own one workflow each on ``upload_jobs`` whose condition is ``new_status eq completed``
and whose action is a webhook to a local receiver (``standins.webhook.Webhook``): those
match. The rest, in fixed shares, are what a real platform holds beside them and what the
trigger and the matcher must pass over:

- 30%: the same rule owned by other users, who change nothing in the run (the trigger
  records the change anyway, since it does not look at owners; the matcher's join drops
  them);
- 30%: rules of the matching users that watch ``failed`` uploads (active, on the same
  table: the trigger's EXISTS walks past them);
- 20%: platform-wide rules on ``background_tasks`` (another source);
- the rest: the matching users' ``completed`` rule, but inactive.

Each change is an upload of one of the matching users going ``processing`` ->
``completed``, ``--changes`` of them spread evenly over the users, so each change meets
exactly one workflow and ``--changes`` executions are expected (keys are per job, so no
idempotency or rate limit skips any).

1. Trigger cost (in this process, plain psycopg, no worker running). Single-row UPDATEs
   ``SET status = 'completed' WHERE id = ...`` of uploads in ``processing``, each its own
   transaction (autocommit: the UPDATE and its commit, one round trip, as a service
   makes them), ``--updates`` per block, timed one by one. Three configurations:

   (a) ``off``: ``ALTER TABLE upload_jobs DISABLE TRIGGER upload_jobs_status_changed``
       (the workflows' update trigger only; the enrichment's completed-upload NOTIFY
       trigger stays on in all three, as in production);
   (b) ``unwanted``: the trigger on, but the ``completed`` rules on ``upload_jobs``
       inactive: no active workflow wants the change, the function's EXISTS is false and
       nothing is written;
   (c) ``wanted``: every rule as above: the change is written to ``job_status_changes``
       (``to_jsonb(NEW)``, an INSERT with its indexes) and ``pg_notify`` is called.

   Each is measured with the server's default ``synchronous_commit`` (on: the commit
   waits for the WAL flush, as a service's does) and with ``synchronous_commit = off``
   (the same work without the flush, so the trigger's CPU is a larger share: the
   pessimistic figure). Blocks run in rounds, the configurations in a rotating order, so
   noise falls on all of them; the median per update over all rounds is reported, and
   the ratios against (a). The outbox is emptied after each (c) block. Bulk: one UPDATE
   of ``--bulk`` rows (reset to ``processing`` with the trigger off and vacuumed first),
   once per configuration per round, the median.

2. Throughput (real workers). The production worker exactly as the stack starts it
   (``celery -A worker worker --queues workflows``, prefork, ``--children`` children) is
   started and idle; its dispatcher thread matches and publishes, its children run
   ``workflows.execute``. Then the changes are committed, ``--commit-size`` uploads per
   UPDATE and transaction, and the clock runs from the first commit until the last
   execution is ``completed`` (its ``finished_at``). Reported: executions/s, and the
   dispatcher's matching rate (changes / last ``matched_at``, from the same start).
   Correctness: every expected execution completed, none failed, skipped or pending;
   the receiver got exactly one POST per idempotency key, and those keys are the
   completed executions' keys.

   The floor (``bare``): ``bench.workflows_bare`` (plain Celery, Redis, JSON, late acks,
   prefetch 1, no project code) on a worker with the same children, sent one message per
   execution carrying the very body and headers the production run posted, which its task
   POSTs to the same receiver. Timed from the first publish to the last POST's arrival.

   Every round runs each of ``--kinds`` once, in a rotating order (the floor never first
   in the first round: it posts the bodies of the latest production run); the
   medians over ``--rounds`` are compared.

Redis: BENCH_REDIS_URL, default redis://127.0.0.1:6379/13, flushed at the start and the
end (this database only): give the bench one nothing else uses (it refuses a database
another client is connected to). BENCH_SHOW_WORKER_LOG=1 prints the end of each worker's
log. Ratios are within one run; the machine this was written on has 2 shared cores, so
absolute figures move from run to run.
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import shlex
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.analytics import log
from bench.throughput import Broker, Worker, _exit_on_signal, queue_keys, running, stop_all_workers
from standins.webhook import Webhook

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
TARGET_UPDATE_RATIO = 1.3
TRIGGER = "upload_jobs_status_changed"
CONFIGS = ("off", "unwanted", "wanted")
KINDS = ("production", "bare")
COMMIT_MODES = ("on", "off")  # synchronous_commit
WORKFLOWS_QUEUE = "workflows"
IDEMPOTENCY = "idempotency-key"
COMPLETED = {"all": [{"field": "new_status", "op": "eq", "value": "completed"}]}
FAILED = {"all": [{"field": "new_status", "op": "eq", "value": "failed"}]}


@contextmanager
def fresh_database(server_url: str, keep: bool) -> Iterator[str]:
    name = f"bench_wf_{uuid.uuid4().hex[:8]}"
    admin = make_url(server_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the workflows ------------------------------------------------------------------------


@dataclass
class Scenario:
    matching_users: list[int]
    shares: dict[str, int]  # workflows of each kind
    completed_rules: list[int] = field(default_factory=list)  # the inactive ones aside


def make_workflows(
    session: Session, hook_url: str, total: int, matching: int, seed: int = 1
) -> Scenario:
    """``total`` workflows, ``matching`` of which meet the run's changes (see the docstring)."""
    from tasks.workflows import store
    from worker.secrets import SecretCipher
    from worker.settings import get_settings

    others = total * 3 // 10
    failed = total * 3 // 10
    background = total * 2 // 10
    inactive = total - matching - others - failed - background
    if inactive < 0:
        raise SystemExit(f"--matching {matching} leaves no room in --workflows {total}")
    cipher = SecretCipher.from_settings(get_settings())
    users = list(
        session.scalars(
            text("INSERT INTO users SELECT FROM generate_series(1, :n) RETURNING id"),
            {"n": matching + others},
        )
    )
    matching_users, other_users = users[:matching], users[matching:]

    def create(user_id: int | None, source: str, condition: Any, active: bool = True) -> int:
        workflow_id, _ = store.create(
            session,
            {
                "name": f"bench {source} {user_id}",
                "user_id": user_id,
                "trigger": {"type": "job_status_changed", "source": source},
                "conditions": condition,
                "actions": [{"type": "webhook", "url": hook_url}],
                "active": active,
            },
            created_by="bench",
            known_tasks=(),
            allowed_hosts={"127.0.0.1"},
            cipher=cipher,
        )
        return workflow_id

    rules: list[tuple[int | None, str, Any, bool]] = [
        *((user_id, "upload_jobs", COMPLETED, True) for user_id in matching_users),
        *((user_id, "upload_jobs", COMPLETED, True) for user_id in other_users),
        *((matching_users[i % matching], "upload_jobs", FAILED, True) for i in range(failed)),
        *((None, "background_tasks", FAILED, True) for _ in range(background)),
        *((matching_users[i % matching], "upload_jobs", COMPLETED, False) for i in range(inactive)),
    ]
    # Saved over time by different users: in no order that would favour a scan.
    random.Random(seed).shuffle(rules)
    for rule in rules:
        create(*rule)
    return Scenario(
        matching_users,
        {
            "match (upload completed, own user)": matching,
            "other users' upload completed": others,
            "upload failed (matching users)": failed,
            "background_tasks failed (platform)": background,
            "upload completed, inactive": inactive,
        },
    )


def insert_uploads(conn: psycopg.Connection, users: list[int], n: int) -> list[int]:
    """``n`` uploads in ``processing``, spread evenly over ``users``; their ids in order.
    No workflow wants 'processing': the insert trigger records none of them."""
    rows = conn.execute(
        "INSERT INTO upload_jobs (user_id, status) "
        "SELECT (%s::bigint[])[1 + i %% %s], 'processing' FROM generate_series(0, %s - 1) i "
        "RETURNING id",
        (users, len(users), n),
    ).fetchall()
    return [row[0] for row in rows]


# -- 1. the trigger's cost ----------------------------------------------------------------


def configure(conn: psycopg.Connection, config: str) -> None:
    """Put the trigger and the rules as ``config`` says (see the docstring)."""
    enable = "DISABLE" if config == "off" else "ENABLE"
    conn.execute(f"ALTER TABLE upload_jobs {enable} TRIGGER {TRIGGER}")
    conn.execute(
        "UPDATE automation_workflows SET active = %s "
        "WHERE source = 'upload_jobs' AND on_statuses = '{completed}' "
        "AND (definition ->> 'active')::boolean",
        (config != "unwanted",),
    )
    # ``active`` is indexed, so each toggle leaves dead rows the trigger's scan would walk:
    # gone before the block is timed, as autovacuum would leave a table toggled this rarely.
    conn.execute("VACUUM ANALYZE automation_workflows")


def outbox_rows(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM job_status_changes").fetchone()[0])  # type: ignore[index]


def empty_outbox(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM job_status_changes")
    conn.execute("VACUUM job_status_changes")


@dataclass
class TriggerFigures:
    single: dict[tuple[str, str], list[float]]  # (config, commit mode) -> seconds per update
    bulk: dict[str, list[float]]  # config -> seconds for the whole UPDATE
    recorded: dict[str, int]  # config -> outbox rows one block wrote


def trigger_cost(plain_url: str, users: list[int], args: argparse.Namespace) -> TriggerFigures:
    blocks = [(config, mode) for mode in COMMIT_MODES for config in CONFIGS]
    single: dict[tuple[str, str], list[float]] = {block: [] for block in blocks}
    bulk: dict[str, list[float]] = {config: [] for config in CONFIGS}
    recorded: dict[str, int] = {}
    with psycopg.connect(plain_url, autocommit=True) as conn:
        n = args.updates
        ids = iter(insert_uploads(conn, users, n * len(blocks) * args.trigger_rounds))
        bulk_ids = insert_uploads(conn, users, args.bulk) if args.bulk else []
        conn.execute("VACUUM ANALYZE")
        for index in range(args.trigger_rounds):
            shift = index % len(CONFIGS)
            order = [
                (config, mode)
                for mode in COMMIT_MODES
                for config in CONFIGS[shift:] + CONFIGS[:shift]
            ]
            for config, mode in order:
                configure(conn, config)
                conn.execute(f"SET synchronous_commit = {mode}")
                block = [next(ids) for _ in range(n)]
                times = []
                for job_id in block:
                    start = time.perf_counter()
                    conn.execute(
                        "UPDATE upload_jobs SET status = 'completed' WHERE id = %s", (job_id,)
                    )
                    times.append(time.perf_counter() - start)
                conn.execute("RESET synchronous_commit")
                single[(config, mode)].extend(times)
                recorded[config] = outbox_rows(conn)
                if config == "wanted":
                    empty_outbox(conn)
            if bulk_ids:
                for config in CONFIGS[shift:] + CONFIGS[:shift]:
                    configure(conn, "off")
                    conn.execute(
                        "UPDATE upload_jobs SET status = 'processing' WHERE id = ANY(%s)",
                        (bulk_ids,),
                    )
                    conn.execute("VACUUM ANALYZE upload_jobs")
                    configure(conn, config)
                    start = time.perf_counter()
                    conn.execute(
                        "UPDATE upload_jobs SET status = 'completed' WHERE id = ANY(%s)",
                        (bulk_ids,),
                    )
                    bulk[config].append(time.perf_counter() - start)
                    if config == "wanted":
                        if (written := outbox_rows(conn)) != len(bulk_ids):
                            raise RuntimeError(f"bulk: {written} of {len(bulk_ids)} recorded")
                        empty_outbox(conn)
            log(
                f"trigger round {index + 1}: "
                + ", ".join(
                    f"{config}/{mode} {statistics.median(single[(config, mode)]) * 1e6:.0f} us"
                    for config, mode in blocks
                )
                + (
                    "; bulk " + ", ".join(f"{c} {bulk[c][-1] * 1000:.0f} ms" for c in CONFIGS)
                    if bulk_ids
                    else ""
                )
            )
        configure(conn, "wanted")
    if recorded.get("off") or recorded.get("unwanted"):
        raise RuntimeError(f"changes recorded where none should be: {recorded}")
    if recorded.get("wanted") != args.updates:
        raise RuntimeError(f"wanted: {recorded.get('wanted')} of {args.updates} recorded")
    return TriggerFigures(single, bulk, recorded)


# -- 2. throughput ------------------------------------------------------------------------


@dataclass
class Run:
    kind: str
    n: int
    seconds: float  # start to the last execution completed (production) / POST (bare)
    last_post_seconds: float  # start to the last POST's arrival
    match_seconds: float | None = None
    publish_seconds: float | None = None  # production: committing; bare: sending
    checks: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.n / self.seconds


class Throughput:
    def __init__(self, url: str, plain_url: str, hook: Webhook, broker: Broker, args: Any):
        from celery import _state

        # No result subscription per send: this process never reads a result.
        _state._set_task_join_will_block(True)
        import bench.workflows_bare as bare
        from worker.celery_app import app

        self.app = app
        self.bare = bare
        self.engine = create_engine(url)
        self.plain_url = plain_url
        self.hook = hook
        self.broker = broker
        self.args = args
        self.data_dir = args.data_dir
        self.bodies: list[tuple[bytes, dict[str, str]]] = []

    def production(self, users: list[int]) -> Run:
        n, timeout = self.args.changes, self.args.timeout
        with psycopg.connect(self.plain_url, autocommit=True) as conn:
            job_ids = insert_uploads(conn, users, n)
            conn.execute("DELETE FROM automation_execution_logs")
            conn.execute("DELETE FROM job_status_changes")
            conn.execute("VACUUM ANALYZE")
        self.hook.received.clear()
        self.hook.posts.clear()
        worker = Worker(None, [WORKFLOWS_QUEUE], self.args.children, self.data_dir, "WARNING")
        with running(worker, self.app), psycopg.connect(self.plain_url) as conn:
            wall0, start = time.time(), time.monotonic()
            size = self.args.commit_size
            for i in range(0, n, size):
                conn.execute(
                    "UPDATE upload_jobs SET status = 'completed' WHERE id = ANY(%s)",
                    (job_ids[i : i + size],),
                )
                conn.commit()
            committed = time.monotonic() - start
            conn.autocommit = True
            deadline = start + timeout
            while (done := self.completed(conn)) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{done} of {n} executions completed in {timeout} s")
                if worker.process is None or worker.process.poll() is not None:
                    raise RuntimeError(f"the worker died:\n{worker.log_tail()}")
                time.sleep(0.2)
            last_finished, last_matched = conn.execute(
                "SELECT (SELECT max(finished_at) FROM automation_execution_logs), "
                "(SELECT max(matched_at) FROM job_status_changes)"
            ).fetchone()  # type: ignore[misc]
            checks = self.check_production(conn, n)
        received = list(self.hook.received)
        self.bodies = [(r.body, self.forwarded_headers(r.headers)) for r in received]
        return Run(
            "production",
            n,
            last_finished.timestamp() - wall0,
            max(r.at for r in received) - start,
            match_seconds=last_matched.timestamp() - wall0,
            publish_seconds=committed,
            checks=checks,
        )

    @staticmethod
    def completed(conn: psycopg.Connection) -> int:
        row = conn.execute(
            "SELECT count(*) FROM automation_execution_logs WHERE status = 'completed'"
        ).fetchone()
        return int(row[0])  # type: ignore[index]

    @staticmethod
    def forwarded_headers(headers: dict[str, str]) -> dict[str, str]:
        keep = ("idempotency-key", "x-automation-signature", "x-automation-attempt")
        return {k: v for k, v in headers.items() if k.lower() in keep}

    def check_production(self, conn: psycopg.Connection, n: int) -> list[str]:
        """What is wrong with the run: expected executions, once each."""
        problems = []
        statuses: dict[str, int] = dict(
            conn.execute(
                "SELECT status, count(*) FROM automation_execution_logs GROUP BY status"
            ).fetchall()
        )
        if statuses != {"completed": n}:
            problems.append(f"executions by status {statuses}, expected {{'completed': {n}}}")
        unmatched = conn.execute(
            "SELECT count(*) FROM job_status_changes WHERE matched_at IS NULL"
        ).fetchone()[0]  # type: ignore[index]
        if unmatched:
            problems.append(f"{unmatched} changes unmatched")
        attempts = conn.execute(
            "SELECT count(*) FROM automation_execution_logs WHERE attempts <> 1"
        ).fetchone()[0]  # type: ignore[index]
        if attempts:
            problems.append(f"{attempts} executions took more than one attempt")
        keys = {
            row[0]
            for row in conn.execute(
                "SELECT idempotency_key FROM automation_execution_logs WHERE status = 'completed'"
            )
        }
        problems += self.check_posts(n, keys)
        return problems

    def check_posts(self, n: int, keys: set[str] | None) -> list[str]:
        received = list(self.hook.received)
        posted = Counter(
            next((v for k, v in r.headers.items() if k.lower() == IDEMPOTENCY), None)
            for r in received
        )
        problems = []
        if len(received) != n:
            problems.append(f"{len(received)} POSTs received for {n} executions")
        if twice := {k: c for k, c in posted.items() if c > 1}:
            problems.append(f"{len(twice)} keys posted more than once")
        if keys is not None and set(posted) != keys:
            problems.append(
                f"keys posted and keys completed differ: {len(set(posted) - keys)} posted "
                f"only, {len(keys - set(posted))} completed only"
            )
        if refused := sum(1 for r in received if r.status >= 300):
            problems.append(f"{refused} POSTs refused")
        return problems

    def floor(self) -> Run:
        if not self.bodies:
            raise RuntimeError("the floor posts the production run's bodies: run it first")
        n = len(self.bodies)
        self.hook.received.clear()
        self.hook.posts.clear()
        worker = Worker(
            "bench.workflows_bare", [self.bare.QUEUE], self.args.children, self.data_dir, "WARNING"
        )
        with running(worker, self.bare.app):
            start = time.monotonic()
            with self.bare.app.producer_or_acquire() as producer:
                for body, headers in self.bodies:
                    self.bare.app.send_task(
                        self.bare.TASK,
                        args=(self.hook.url, body.decode(), headers),
                        producer=producer,
                    )
            sent = time.monotonic() - start
            self.broker.wait_drained(queue_keys(self.bare.QUEUE), self.args.timeout)
        received = list(self.hook.received)
        last = max((r.at for r in received), default=start)
        return Run(
            "bare",
            n,
            last - start,
            last - start,
            publish_seconds=sent,
            checks=self.check_posts(n, None),
        )


# -- the report ---------------------------------------------------------------------------


def report(
    args: argparse.Namespace,
    scenario: Scenario,
    trigger: TriggerFigures | None,
    runs: list[Run],
) -> None:
    print()
    print(f"command: {shlex.join(['python', '-m', 'bench.workflows', *sys.argv[1:]])}")
    print(
        f"machine: {os.cpu_count()} CPUs (2 shared cores, noisy: compare the ratios, which "
        f"are taken within this run); PostgreSQL and Redis on the same machine"
    )
    print(f"workflows: {sum(scenario.shares.values())}")
    for label, count in scenario.shares.items():
        print(f"  {count:>6}  {label}")
    if trigger is not None:
        print(
            f"\n1. trigger cost: single-row status updates of upload_jobs, 'processing' -> "
            f"'completed', autocommit, {args.updates} per block x "
            f"{args.trigger_rounds} rounds; median per update"
        )
        print(
            f"{'configuration':<52} {'sync commit on':>15} {'x off':>6} "
            f"{'sync commit off':>16} {'x off':>6}"
        )
        labels = {
            "off": "(a) off: trigger disabled",
            "unwanted": "(b) unwanted: trigger on, no active workflow wants it",
            "wanted": "(c) wanted: trigger on, change written + NOTIFY",
        }
        base = {mode: statistics.median(trigger.single[("off", mode)]) for mode in COMMIT_MODES}
        for config in CONFIGS:
            cells = []
            for mode in COMMIT_MODES:
                value = statistics.median(trigger.single[(config, mode)])
                ratio = "" if config == "off" else f"{value / base[mode]:.2f}"
                cells.append((f"{value * 1e6:.0f} us", ratio))
            print(
                f"{labels[config]:<52} {cells[0][0]:>15} {cells[0][1]:>6} "
                f"{cells[1][0]:>16} {cells[1][1]:>6}"
            )
        worst = statistics.median(trigger.single[("wanted", "on")]) / base["on"]
        print(
            f"target (c)/(a) <= {TARGET_UPDATE_RATIO} (synchronous commit on): "
            f"{worst:.2f} {'ok' if worst <= TARGET_UPDATE_RATIO else 'ABOVE'}"
        )
        if trigger.bulk and all(trigger.bulk.values()):
            bulk_base = statistics.median(trigger.bulk["off"])
            print(f"bulk: one UPDATE of {args.bulk} rows (median of {args.trigger_rounds})")
            for config in CONFIGS:
                value = statistics.median(trigger.bulk[config])
                ratio = "" if config == "off" else f"  x{value / bulk_base:.2f}"
                print(f"  {labels[config]:<52} {value * 1000:>8.0f} ms{ratio}")
    if runs:
        print(
            f"\n2. throughput: {args.changes} status changes (uploads of "
            f"{len(scenario.matching_users)} users, processing -> completed, committed "
            f"{args.commit_size} per transaction); "
            f"one worker, prefork, {args.children} children; webhook to a local receiver"
        )
        print(
            f"{'kind':<11} {'exec/s':>8} {'matched/s':>10} {'s to done':>10} "
            f"{'s to last POST':>15} {'commit/send s':>14}  checks"
        )
        for run in runs:
            matched = f"{run.n / run.match_seconds:.0f}" if run.match_seconds else "-"
            print(
                f"{run.kind:<11} {run.rate:>8.0f} {matched:>10} {run.seconds:>10.1f} "
                f"{run.last_post_seconds:>15.1f} {run.publish_seconds or 0:>14.2f}  "
                f"{'; '.join(run.checks) or 'ok: one POST per key, every execution completed'}"
            )
        bare = statistics.median(r.rate for r in runs if r.kind == "bare")
        rates = [r.rate for r in runs if r.kind == "production"]
        if rates:
            print(f"production / bare: {statistics.median(rates) / bare:.2f} (medians)")
        print(
            "production: from the first commit to the last execution completed; "
            "bare: from the first send to the last POST"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--matching", type=int, default=100)
    parser.add_argument("--updates", type=int, default=1000, help="single-row UPDATEs a block")
    parser.add_argument("--trigger-rounds", type=int, default=5)
    parser.add_argument("--bulk", type=int, default=10_000, help="rows of the bulk UPDATE; 0: none")
    parser.add_argument("--rounds", type=int, default=1, help="throughput rounds (each kind)")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--commit-size", type=int, default=100)
    parser.add_argument("--skip", default="", help="trigger or throughput: leave that part out")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="throughput kinds: production, bare (the floor)",
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of about a minute: small numbers"
    )
    args = parser.parse_args()
    args.kinds = [kind for kind in KINDS if kind in args.kinds.split(",")]
    if args.kinds != list(KINDS):
        parser.error("--kinds: production and bare, the floor it is compared with")
    if args.quick:
        args.changes, args.updates, args.trigger_rounds, args.bulk = 1000, 200, 2, 2000
    return args


def throughput(bench: Throughput, users: list[int], kinds: list[str], rounds: int) -> list[Run]:
    runs: list[Run] = []
    for index in range(rounds):
        # A rotating order; the floor posts the bodies of an earlier run, so never first.
        order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
        if index == 0 and order[0] == "bare" and len(order) > 1:
            order = [*order[1:], "bare"]
        for kind in order:
            run = bench.floor() if kind == "bare" else bench.production(users)
            runs.append(run)
            log(
                f"round {index + 1}, {kind}: {run.rate:.0f} executions/s "
                f"({run.seconds:.1f} s){'; ' if run.checks else ''}{'; '.join(run.checks)}"
            )
    return runs


def main() -> None:
    args = parse_args()
    server = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    broker = Broker(redis_url)
    broker.claim(redis_url)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    atexit.register(stop_all_workers)
    from worker.secrets import new_key

    with (
        fresh_database(server, keep=bool(os.environ.get("BENCH_KEEP"))) as url,
        tempfile.TemporaryDirectory() as data_dir,
        Webhook("/hooks/bench") as hook,
    ):
        os.environ.update(
            DATABASE_URL=url,
            REDIS_URL=redis_url,
            BENCH_REDIS_URL=redis_url,
            DATA_DIR=data_dir,
            TOKEN_ENCRYPTION_KEY=os.environ.get("TOKEN_ENCRYPTION_KEY") or new_key(),
            WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        )
        os.environ.pop("BROKER_URL", None)  # the broker is REDIS_URL's database
        args.data_dir = data_dir
        from db.migrate import upgrade

        upgrade(url)
        plain_url = make_url(url).set(drivername="postgresql").render_as_string(False)
        engine = create_engine(url)
        with Session(engine) as session, session.begin():
            scenario = make_workflows(session, hook.url, args.workflows, args.matching)
        engine.dispose()
        log(f"{args.workflows} workflows saved; {args.matching} match")
        trigger = None
        if "trigger" not in args.skip:
            trigger = trigger_cost(plain_url, scenario.matching_users, args)
        runs: list[Run] = []
        if "throughput" not in args.skip:
            broker.client.flushdb()
            bench = Throughput(url, plain_url, hook, broker, args)
            try:
                runs = throughput(bench, scenario.matching_users, args.kinds, args.rounds)
            finally:
                stop_all_workers()
                broker.client.flushdb()
                bench.engine.dispose()
        report(args, scenario, trigger, runs)


if __name__ == "__main__":
    main()
