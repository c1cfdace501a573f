"""The run journal: what the task path records goes to Redis first, then to PostgreSQL.

Every message that reaches a worker must end in one visible place, a run in ``task_runs``
or a row in ``dead_letters``, and that record must exist before the message is
acknowledged. Writing it to PostgreSQL on the task path made every task pay two
synchronous commits, and made a database outage discard work: the record failed, so the
message was acknowledged with no trace. The message itself lives in Redis, so the record
goes there too, in the same store and at the same durability, as entries of a stream
(``automation:journal``). A run costs its child one round trip: the start is sent before
the body runs but not waited for (unless the message was redelivered, when the delivery
count decides whether it may run), and its answer is read with the finish, which carries
the run's Celery result too (``worker.result_backend``). A drainer thread in every worker's main
process moves entries into PostgreSQL in batches, and acknowledges them only after its
transaction commits; while PostgreSQL is down, entries wait in Redis and the tasks that
do not need the database go on running.

How late a record can be: a few milliseconds when idle (a drainer is woken by each entry),
up to 50 ms plus one transaction under load (batches grow while entries keep coming); in
a PostgreSQL outage, until the database is back; if every worker is down, until one
starts. A SIGKILLed worker loses nothing already appended: its last run's start entry is
there, and becomes ``lost`` when the message comes back.

What a run's row says:

- ``started`` then the body's outcome (``success``, ``failure``, ``retry``, ``refused``,
  ``duplicate``, ``ignored``, ``revoked``) from the child's finish entry;
- ``success`` with ``committed_at`` as soon as the task's own transaction commits, since
  the marker is written in that transaction: a run killed after its commit is never
  ``lost``;
- ``cut_off`` when the broker connection was lost mid-run (the message comes back);
- ``lost`` when the same message is delivered again while its earlier delivery never
  finished (its worker died), and ``failure`` when the worker's parent killed the child
  at the hard time limit.

Delivery counting, for ``MAX_DELIVERIES``: a counter per (task id, retry) in Redis goes up
when a delivery starts and is deleted when it finishes, however it finishes. A delivery
that finds it above zero follows deliveries whose worker died; only those count.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from db.queries import queries
from db.session import get_engine
from worker.redis_client import get_redis

log = logging.getLogger(__name__)

STREAM = "automation:journal"
GROUP = "drainers"
INFLIGHT_PREFIX = "automation:inflight:"
# Entries the drainer could not store even one by one (a bug, not an outage): kept here.
REJECTED = "automation:journal:rejected"
# A delivery counter outlives any redelivery (the visibility timeout is two hours).
INFLIGHT_TTL_SECONDS = 24 * 3600

SUMMARY_LIMIT = 500  # characters kept of arguments, results and errors
BODY_LIMIT = 256 * 1024  # a dead letter keeps its body whole up to this

# A start: count the delivery and append the entry in one round trip.
_START = """
local delivery = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'k', 'start', 'd', ARGV[2], 'n', delivery)
return delivery
"""

# A finish, in the same round trip as the run's result (KEYS[5], optional): the entry
# takes its delivery number from the counter, then the counter goes. The run is counted
# for /metrics in the same script (KEYS[3], KEYS[4]): a finish appended is a finish
# counted, exactly once, whoever drains it and however often. A result never replaces a
# stored success (as Celery's own backend guards: a duplicate delivery of a task that
# succeeded must not turn it into a failure), checked here rather than with a GET from the
# child first.
_FINISH = """
local delivery = redis.call('GET', KEYS[1]) or '0'
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'k', 'finish', 'd', ARGV[1], 'n', delivery)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
if ARGV[3] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[4], ARGV[5])
end
if KEYS[5] then
  local current = redis.call('GET', KEYS[5])
  local stored_success = false
  if current then
    local ok, meta = pcall(cjson.decode, current)
    stored_success = ok and type(meta) == 'table' and meta.status == 'SUCCESS'
  end
  if not stored_success then
    if tonumber(ARGV[7]) > 0 then
      redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7])
    else
      redis.call('SET', KEYS[5], ARGV[6])
    end
    redis.call('PUBLISH', KEYS[5], ARGV[6])
  end
end
"""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _without_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL: keep it visible as the four characters \x00.
    return text.replace("\x00", "\\x00")


def truncate(text: str, limit: int = SUMMARY_LIMIT) -> str:
    text = _without_nul(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(value: Any, limit: int = SUMMARY_LIMIT) -> str:
    """A JSON rendering of ``value``, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, default=repr, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return truncate(text, limit)


def describe_error(exc: BaseException) -> str:
    return truncate(f"{type(exc).__name__}: {exc}")


def inflight_key(task_id: str, retries: int) -> str:
    return f"{INFLIGHT_PREFIX}{task_id}:{retries}"


# -- run counters, for /metrics ------------------------------------------------------------
# Finished runs by task and outcome, and their durations as histogram buckets, counted in
# Redis when a finish is appended (so only ever up: Prometheus counters). The console,
# which is no worker, reads them at scrape time (``console.metrics``). Each field is
# "<task>|<outcome>" in RUN_COUNTS, and "<task>|<bucket upper bound>" (not cumulative:
# one HINCRBY a run; the reader adds them up) and "<task>|sum" in RUN_DURATIONS.
RUN_COUNTS = "automation:metrics:runs"
RUN_DURATIONS = "automation:metrics:durations"
RUN_METRICS_KEYS = (RUN_COUNTS, RUN_DURATIONS)
# Seconds: a ping takes milliseconds, an aggregation up to an hour (the stats time limit).
DURATION_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


@dataclass(frozen=True)
class RunCount:
    """The counter fields one finished run adds to."""

    count_field: str
    bucket_field: str  # "": no duration (a run revoked before it started)
    sum_field: str
    seconds: float

    @classmethod
    def of(cls, task_name: str, fields: Mapping[str, Any]) -> RunCount:
        status = str(fields.get("status") or "unknown")
        seconds = fields.get("runtime_seconds")
        if not isinstance(seconds, int | float):
            return cls(f"{task_name}|{status}", "", "", 0.0)
        bound = next((b for b in DURATION_BUCKETS if seconds <= b), float("inf"))
        return cls(
            f"{task_name}|{status}", f"{task_name}|{_bound(bound)}", f"{task_name}|sum", seconds
        )

    def argv(self) -> list[Any]:
        return [self.count_field, self.bucket_field, self.sum_field, repr(self.seconds)]

    def add_to(self, pipe: Any) -> None:
        pipe.hincrby(RUN_COUNTS, self.count_field, 1)
        if self.bucket_field:
            pipe.hincrby(RUN_DURATIONS, self.bucket_field, 1)
            pipe.hincrbyfloat(RUN_DURATIONS, self.sum_field, self.seconds)


@dataclass(frozen=True)
class RunMetrics:
    """What the counters say: runs by (task, outcome); per task, the cumulative count at
    each bucket bound (DURATION_BUCKETS then +Inf) and the sum of durations."""

    runs: dict[tuple[str, str], int]
    buckets: dict[str, list[tuple[str, int]]]
    sums: dict[str, float]


def read_run_metrics(client: redis.Redis) -> RunMetrics:
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(RUN_COUNTS)
    pipe.hgetall(RUN_DURATIONS)
    counts, durations = pipe.execute()
    runs: dict[tuple[str, str], int] = {}
    for field, value in counts.items():
        task, _, status = field.decode().rpartition("|")
        runs[(task, status)] = int(value)
    per_bound: dict[str, dict[str, int]] = {}
    sums: dict[str, float] = {}
    for field, value in durations.items():
        task, _, bound = field.decode().rpartition("|")
        if bound == "sum":
            sums[task] = float(value)
        else:
            per_bound.setdefault(task, {})[bound] = int(value)
    bounds = [*(_bound(b) for b in DURATION_BUCKETS), "+Inf"]
    buckets: dict[str, list[tuple[str, int]]] = {}
    for task, counted in per_bound.items():
        total, cumulative = 0, []
        for bound in bounds:
            total += counted.get(bound, 0)
            cumulative.append((bound, total))
        buckets[task] = cumulative
        sums.setdefault(task, 0.0)
    return RunMetrics(runs, buckets, sums)


# -- the task path's side: append ----------------------------------------------------------


@dataclass(frozen=True)
class RunStart:
    """What is known of a run when its body is about to start."""

    task_id: str
    task_name: str
    retries: int
    args_summary: str
    queue: str | None
    forwarded_from: str | None
    worker_host: str | None
    started_at: dt.datetime
    run_key: str = ""

    def fields(self) -> dict[str, Any]:
        return {
            "run_key": self.run_key,
            "task_id": self.task_id,
            "task_name": self.task_name,
            "retries": self.retries,
            "args_summary": self.args_summary,
            "queue": self.queue,
            "forwarded_from": self.forwarded_from,
            "worker_host": self.worker_host,
            "started_at": self.started_at.isoformat(),
        }


def new_run_key() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PendingResult:
    """A run's result as Celery's Redis backend would store it, written with its finish."""

    key: bytes | str
    value: bytes | str
    expires_seconds: int  # 0: kept until deleted


class Journal:
    """Appends entries; one per process (redis-py's pool reconnects after a fork)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        # redis-py's command- and connection-level calls carry no type hints.
        self._raw: Any = client

    def _start_command(self, run: RunStart) -> tuple[Any, ...]:
        return (
            "EVAL",
            _START,
            2,
            inflight_key(run.task_id, run.retries),
            STREAM,
            INFLIGHT_TTL_SECONDS,
            json.dumps(run.fields()),
        )

    def start(self, run: RunStart) -> int:
        """Append the start of ``run``; return its delivery number (1 unless workers died)."""
        return int(self._raw.execute_command(*self._start_command(run)))

    def start_unconfirmed(self, run: RunStart) -> Any:
        """Send the start of ``run`` without waiting for Redis to answer.

        The command is on the wire before the body runs, so a worker that dies in the body
        leaves its start behind, as with ``start``. The answer (the delivery number) is read
        by ``finish``, in the same round trip as the finish itself: one wait per run instead
        of two. For a message that was never delivered before, the number can only be 1.
        """
        pool = self._raw.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_command(*self._start_command(run))
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        return connection

    def finish(
        self,
        run: RunStart,
        fields: Mapping[str, Any],
        result: PendingResult | None = None,
        started_on: Any = None,
    ) -> None:
        """Append the end of ``run`` (and store its result); it is no longer in flight.

        ``started_on``: the connection ``start_unconfirmed`` sent the start on; its answer is
        read here.
        """
        keys: list[Any] = [inflight_key(run.task_id, run.retries), STREAM, *RUN_METRICS_KEYS]
        argv: list[Any] = [
            json.dumps({**run.fields(), **fields}, default=str),
            *RunCount.of(run.task_name, fields).argv(),
        ]
        if result is not None:
            keys.append(result.key)
            argv += [result.value, result.expires_seconds]
        command = ("EVAL", _FINISH, len(keys), *keys, *argv)
        if started_on is None:
            self._raw.execute_command(*command)
            return
        # Both answers are read (an error answer raises), or the connection is dropped:
        # it is never handed back with an answer still on its way.
        try:
            started_on.send_command(*command)
            started_on.read_response()
            started_on.read_response()
        except BaseException:
            started_on.disconnect()
            raise
        finally:
            self._raw.connection_pool.release(started_on)

    def append(self, kind: str, fields: Mapping[str, Any]) -> str:
        entry = {"k": kind, "d": json.dumps(fields, default=str)}
        if kind != "finish":
            entry_id = self.client.xadd(STREAM, entry)  # type: ignore[arg-type]
        else:
            # A finish recorded off the fast path (revoked before it ran, or after the
            # journal failed once) is counted with it too, in one MULTI.
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(STREAM, entry)  # type: ignore[arg-type]
            RunCount.of(str(fields.get("task_name") or "unknown"), fields).add_to(pipe)
            entry_id = pipe.execute()[0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


@functools.cache
def journal() -> Journal:
    """This process's journal (redis-py's pool opens fresh connections after a fork)."""
    return Journal(get_redis())


def record(kind: str, fields: Mapping[str, Any], delivery: int = 0) -> bool:
    """Append an entry; PostgreSQL directly if Redis will not take it. False: neither did."""
    try:
        journal().append(kind, fields)
        return True
    except Exception as exc:
        redis_error: Exception = exc
    try:
        store(get_engine(), [("", kind, dict(fields), delivery)])
        return True
    except Exception:
        log.error(
            "run journal: %s entry for %s not recorded: Redis: %s; PostgreSQL failed too",
            kind,
            fields.get("task_id"),
            redis_error,
            exc_info=True,
        )
        return False


# -- dead letters ---------------------------------------------------------------------------


def body_text(body: Any) -> str | None:
    if body is None:
        return None
    if isinstance(body, str):
        return _without_nul(body[:BODY_LIMIT])
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)[:BODY_LIMIT]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "\x00"  # not text: kept as base64 below
        if "\x00" not in text:  # PostgreSQL text cannot hold NUL
            return text
        return "base64:" + base64.b64encode(raw).decode("ascii")
    return summarize(body, BODY_LIMIT)


def dead_letter_fields(
    *,
    reason: str,
    headers: Any,
    body: Any,
    content_type: Any,
    queue: Any,
    worker_host: str | None,
) -> dict[str, Any]:
    """A dead letter's row, from whatever the message had (any of it may be malformed)."""
    safe_headers = headers if isinstance(headers, Mapping) else {"not_a_mapping": headers}
    # jsonb cannot hold \u0000 either: such a character is kept as the visible text "\u0000".
    encoded = json.dumps(dict(safe_headers), default=repr).replace("\\u0000", "\\\\u0000")
    safe_headers = json.loads(encoded)
    return {
        "reason": truncate(reason, 2000),
        "task_id": _short_str(safe_headers.get("id")),
        "task_name": _short_str(safe_headers.get("task")),
        "queue": _short_str(queue),
        "content_type": _short_str(content_type),
        "headers": safe_headers,
        "body": body_text(body),
        "worker_host": worker_host,
        "received_at": utcnow().isoformat(),
    }


def _short_str(value: Any) -> str | None:
    return None if value is None else truncate(str(value), 200)


# -- the drainer's side: store --------------------------------------------------------------

SQL = queries("worker", "run_journal")
_FINISH_COLUMNS = ("finished_at", "runtime_seconds", "result_summary", "error")


def _py_rank(status: str) -> int:
    return {"started": 0, "lost": 1}.get(status, 2)


def _json_rows(rows: list[dict[str, Any]]) -> str:
    return json.dumps(
        rows, default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v)
    )


def upsert_runs(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or merge runs by ``run_key``; entries may arrive in any order, or twice."""
    if rows:
        conn.execute(SQL["upsert_runs"], {"rows": _json_rows(rows)})


def mark_committed(conn: Connection, run: RunStart, now: dt.datetime) -> None:
    """In the task's own transaction: its work commits, and so does this row saying so."""
    conn.execute(SQL["mark_committed"], {"run_key": run.run_key, "committed_at": now})


def _parse_time(value: Any) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _merge_runs(entries: Iterable[tuple[str, str, dict[str, Any], int]]) -> list[dict[str, Any]]:
    """One row per run key from its entries in this batch (a later outcome wins)."""
    rows: dict[str, dict[str, Any]] = {}
    for _, _kind, data, delivery in entries:
        row = {
            **data,
            "started_at": _parse_time(data.get("started_at")),
            "finished_at": _parse_time(data.get("finished_at")),
            "status": data.get("status") or "started",
            "delivery": delivery or data.get("delivery") or 1,
        }
        previous = rows.get(row["run_key"])
        if previous is None:
            rows[row["run_key"]] = row
            continue
        merged = {**previous, **{k: v for k, v in row.items() if v is not None}}
        if _py_rank(row["status"]) < _py_rank(previous["status"]):
            for column in ("status", *_FINISH_COLUMNS):
                merged[column] = previous.get(column)
        merged["delivery"] = max(previous["delivery"], row["delivery"])
        rows[row["run_key"]] = merged
    return list(rows.values())


def store(engine: Engine, entries: list[tuple[str, str, dict[str, Any], int]]) -> None:
    """Write a batch of decoded entries ``(entry id, kind, data, delivery)`` in one transaction."""
    runs = [e for e in entries if e[1] in ("start", "finish")]
    lost = [data for _, kind, data, delivery in runs if kind == "start" and delivery > 1]
    killed = [data for _, kind, data, _ in entries if kind == "killed"]
    dead = [
        {**data, "journal_id": entry_id} for entry_id, kind, data, _ in entries if kind == "dead"
    ]
    with engine.begin() as conn:
        upsert_runs(conn, _merge_runs(runs))
        if lost:
            conn.execute(SQL["mark_lost"], {"rows": _json_rows(lost)})
        if killed:
            conn.execute(SQL["mark_killed"], {"rows": _json_rows(killed)})
        if dead:
            conn.execute(SQL["insert_dead_letters"], {"rows": _json_rows(dead)})


def _decode(entry_id: Any, fields: Mapping[bytes, bytes]) -> tuple[str, str, dict[str, Any], int]:
    ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    kind = fields[b"k"].decode()
    data = json.loads(fields[b"d"])
    delivery = int(fields.get(b"n", b"0"))
    return ident, kind, data, delivery


class Drainer(threading.Thread):
    """Moves journal entries into PostgreSQL; one per worker main process, any number."""

    BLOCK_MS = 1000
    BATCH = 500
    CLAIM_IDLE_MS = 60_000  # entries a dead drainer had read are taken over after this
    CLAIM_EVERY_SECONDS = 30.0
    # While entries keep coming, the wait between batches doubles from MIN to MAX: the
    # worst delay before a finished run's row is visible is MAX plus one transaction.
    GATHER_MIN_SECONDS = 0.005
    GATHER_MAX_SECONDS = 0.05

    def __init__(self, engine: Engine, client: redis.Redis, name: str | None = None) -> None:
        super().__init__(name="journal-drainer", daemon=True)
        self.engine = engine
        self.client = client
        self.consumer = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, start: str, block: bool = True) -> list[tuple[Any, Mapping[bytes, bytes]]]:
        """``start`` is ``0`` for this drainer's own unacknowledged entries, ``>`` for new;
        ``block``: wait up to BLOCK_MS for a new entry."""
        reply: Any = self.client.xreadgroup(
            GROUP,
            self.consumer,
            {STREAM: start},
            count=self.BATCH,
            block=self.BLOCK_MS if block and start != "0" else None,
        )
        return list(reply[0][1]) if reply else []

    def claim_stale(self) -> list[tuple[Any, Mapping[bytes, bytes]]]:
        reply: Any = self.client.xautoclaim(
            STREAM, GROUP, self.consumer, self.CLAIM_IDLE_MS, "0-0", count=self.BATCH
        )
        return [entry for entry in reply[1] if entry[1]]

    def apply(self, raw: list[tuple[Any, Mapping[bytes, bytes]]]) -> None:
        """Store ``raw`` and acknowledge it; entries that cannot be stored are set aside."""
        if not raw:
            return
        decoded, undecodable = [], []
        for entry_id, fields in raw:
            if not fields:  # trimmed away while this drainer held it: nothing to store
                continue
            try:
                decoded.append(_decode(entry_id, fields))
            except (KeyError, ValueError, UnicodeDecodeError):
                undecodable.append((entry_id, fields))
        try:
            store(self.engine, decoded)
        except DBAPIError as exc:
            if exc.connection_invalidated or _is_outage(exc):
                raise
            # A bad entry (a bug): store the others one by one, set the bad ones aside.
            for entry in decoded:
                try:
                    store(self.engine, [entry])
                except DBAPIError as one:
                    if one.connection_invalidated or _is_outage(one):
                        raise
                    undecodable.append((entry[0], {b"d": json.dumps(entry[2]).encode()}))
                    log.error("journal entry %s could not be stored: %s", entry[0], one)
        if undecodable:
            pipe = self.client.pipeline()
            for entry_id, fields in undecodable:
                pipe.lpush(REJECTED, json.dumps({"id": str(entry_id), "fields": repr(fields)}))
            pipe.ltrim(REJECTED, 0, 9999)
            pipe.execute()
        ids = [entry_id for entry_id, _ in raw]
        pipe = self.client.pipeline()
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()

    def drain_once(self, start: str = ">") -> int:
        raw = self.read(start)
        self.apply(raw)
        return len(raw)

    def run(self) -> None:
        backoff, failing, own_pending = 1.0, False, True
        next_claim = 0.0
        gather = self.GATHER_MIN_SECONDS
        while not self.stopping.is_set():
            try:
                if own_pending:
                    # At start, or after an outage: what this drainer read but did not store.
                    self.ensure_group()
                    while self.drain_once("0"):
                        pass
                    own_pending = False
                now = time.monotonic()
                if now >= next_claim:
                    self.apply(self.claim_stale())
                    next_claim = now + self.CLAIM_EVERY_SECONDS
                raw = self.read(">", block=False)
                if not raw:
                    # Idle: the next entry is stored as soon as it comes, and what follows
                    # it (the same run's finish, often) straight after.
                    gather = self.GATHER_MIN_SECONDS
                    self.apply(self.read(">"))
                else:
                    self.apply(raw)
                    if len(raw) < self.BATCH:
                        # Busy: let more entries gather, longer each time it stays busy.
                        # One transaction for many runs costs far less than one each, and
                        # takes the drainer off the main thread (it shares the GIL).
                        self.stopping.wait(gather)
                        gather = min(gather * 2, self.GATHER_MAX_SECONDS)
                if failing:
                    log.warning("run journal: PostgreSQL answers again; draining")
                backoff, failing = 1.0, False
            except Exception as exc:
                if not failing:
                    log.warning("run journal: cannot drain (%s); entries wait in Redis", exc)
                failing, own_pending = True, True
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def stop(self) -> None:
        self.stopping.set()


def _is_outage(exc: DBAPIError) -> bool:
    return isinstance(exc.orig, psycopg.OperationalError | psycopg.InterfaceError)


def pending_entries(client: redis.Redis) -> int:
    """Entries not yet in PostgreSQL (for the status report)."""
    try:
        return int(client.xlen(STREAM))
    except redis.ResponseError:
        return 0
