"""Spotify enrichment at scale: requests against their minimum, wall time against the
rate limit's floor, through real workers and the Spotify stand-in.

    python -m bench.enrichment [--listens 100000] [--rpm 6000] [--window 5] [--workers 2]
                               [--latency 0.005] [--json]

What runs. A fresh database on BENCH_DATABASE_URL's server (default: the local
PostgreSQL) is seeded with `automation seed`'s generator: ``--listens`` imported listens
(default 100k) drawn Zipf-like from a catalogue of ``--tracks`` tracks (default 12% of
the listens: about 9.5k distinct songs for 100k listens), with the exports' noise (case,
" - Remastered", "feat." credits), in about 130 uploads of about 100 users. Every one of
those users gets a live connection (``tasks.enrichment.accounts.connect``, no access token
yet, so the first run refreshes them) whose refresh token the stand-in knows. The
stand-in (``standins/spotify.py``, in this process, on 127.0.0.1, answering every
API call after ``--latency`` seconds) holds the whole catalogue, read back from the
database (ids ``ar<artist id>``, ``al<album id>``, ``tr<track id>``; artists with their
genres), except one track in a hundred: the songs Spotify does not have.

``--workers`` real worker processes (``celery -A worker worker --queues enrichment
--concurrency 1 --pool prefork``) consume the enrichment queue with
SPOTIFY_REQUESTS_PER_MINUTE=``--rpm`` and SPOTIFY_RATE_WINDOW_SECONDS=``--window``;
Redis is BENCH_REDIS_URL (default db 14, flushed at start). The default rate, 6000 a
minute (500 per 5 s), keeps the run rate-bound on a 2-core machine: two workers, the
stand-in and PostgreSQL sharing it sustain about 180 requests a second, below the 200
of 12000 a minute, which would measure the machine rather than the limiter. About 9.5k
requests then have a floor of 95 s; the whole bench takes about two minutes.

How the work is kicked, as production does. The uploads are seeded as 'processing'
(their listens are written, the upload is not finished yet). Once the workers answer a
ping: ``enrichment.enrich_pending`` is sent by name (beat's hourly run; it continues
itself while a backlog remains), then every upload is set 'completed' in one
transaction, whose commit fires the upload_jobs trigger (db/triggers/): the enrichment workers'
dispatcher hears the NOTIFY and publishes one ``enrichment.enrich_upload`` per upload.
So the chain and the upload runs work beside each other, and the workers are all busy.
The kick's instant is taken just before the send.

The bench waits until no listen of a live connection is pending and the workers are
idle, then reports:

- Requests, from the stand-in's log: searches, /tracks and /artists batch calls,
  single-item calls, token calls (not rate-limited, shown apart), 429s and 5xx. The
  **minimum** is one search per distinct key searched (``spotify_matches`` rows with a
  query that were asked: ``attempts > 0``) plus ceil(ids / 50) for the keys looked up
  by id (``/tracks``) and for the artists fetched (``/artists``). Target: the API
  requests made are within 5% of it. Duplicate ``q=`` strings (a key searched twice)
  and ids fetched twice are counted.
- Wall time, from the kick to the last listen enriched (``max(enriched_at)``), against
  the rate limit's **floor**: with a budget of ``B = floor(rpm * window / 60)``
  requests per sliding window of ``W = window`` seconds, ``n`` requests need at least
  ``ceil(n / B - 1) * W`` seconds (the first B go at once, then B more each window).
  Target: wall time within 1.2x the floor of the requests made. Time outside the
  limiter's schedule, wall minus floor, is split into: before the first request
  (start-up, token refreshes, registration), between the first and the last request
  beyond the floor (windows that used less than the budget: workers registering, or
  too slow, or idle), and from the last request to the last listen enriched. The
  requests in each window from the kick, and the peak rate over any window, show
  where the budget went unused and whether the workers could use it at all.
- Correctness: listens matched / not found / failed, none pending (and of those left,
  how many point at a key already answered: no run will ever come back for them),
  keys asked twice. A run where listens stay pending with nothing queued or running
  for 20 s is reported as stalled rather than waited on until ``--timeout``.
- Task runs (``task_runs``): links of the chain, upload runs, failures, and the time
  chain links waited on the queue.

``--json`` prints the figures as JSON instead of the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from bench.analytics import fresh_database, log
from standins.spotify import (
    RecordedRequest,
    SpotifyStandIn,
    StandInAlbum,
    StandInArtist,
    StandInTrack,
)
from worker.stack import celery_argv

NOW = dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.UTC)
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"
BATCH = 50  # ids per /tracks and /artists call (``tasks.enrichment.spotify``)
MISSING_ONE_IN = 100  # catalogue tracks the stand-in leaves out: songs Spotify lacks
TARGET_EXCESS = 0.05
TARGET_WALL_RATIO = 1.2
STOP_TIMEOUT = 60.0
STALL_SECONDS = 20.0  # no progress, no task queued or running: the run is over

PENDING_SQL = text("""
    SELECT count(*) FROM listens AS l
    JOIN spotify_tokens AS c ON c.user_id = l.user_id AND c.revoked_at IS NULL
    WHERE l.enrichment_status = 'pending'
""")


@dataclass(frozen=True)
class Options:
    listens: int
    tracks: int
    users: int
    rpm: int
    window: float
    workers: int
    latency: float
    batch_size: int | None
    timeout: float
    seed: int


def budget(rpm: int, window: float) -> int:
    """Requests the limiter admits per window (Settings.spotify_rate_budget)."""
    return int(rpm * window // 60)


def floor_seconds(requests: int, per_window: int, window: float) -> float:
    """ceil(n / B - 1) * W: the first B requests go at once, then B more each window."""
    if requests <= per_window:
        return 0.0
    return math.ceil((requests - per_window) / per_window) * window


def per_window_counts(times: Sequence[float], kick: float, window: float) -> list[int]:
    """Requests in each consecutive ``window`` seconds from the kick: the run's profile."""
    if not times:
        return []
    counts = [0] * (int((times[-1] - kick) // window) + 1)
    for at in times:
        counts[int((at - kick) // window)] += 1
    return counts


def peak_rate(times: Sequence[float], window: float) -> float:
    """The most requests in any ``window`` seconds, per second."""
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most / window


# -- set-up ---------------------------------------------------------------------------------


def seed_listens(url: str, options: Options) -> dict[str, int]:
    from db.seed import SeedSpec, seed_url

    report = seed_url(
        url,
        SeedSpec(
            users=options.users,
            tracks=options.tracks,
            plays=0,
            listens=options.listens,
            seed=options.seed,
            now=NOW,
        ),
    )
    return {"tracks": report.tracks, "uploads": report.uploads, "listens": report.listens}


def hold_uploads(engine: Engine) -> None:
    """Seeded uploads become 'processing': their completion is the bench's kick."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE upload_jobs SET status = 'processing', completed_at = NULL"))


def connect_users(engine: Engine, standin: SpotifyStandIn, token_key: str) -> int:
    """A live connection for every user with listens, as the OAuth callback stores it."""
    from tasks.enrichment.accounts import connect
    from worker.secrets import SecretCipher

    cipher = SecretCipher(token_key)
    with Session(engine) as session, session.begin():
        users = list(session.scalars(text("SELECT DISTINCT user_id FROM listens ORDER BY 1")))
        for user_id in users:
            refresh_token = f"bench-refresh-{user_id}"
            standin.add_refresh_token(refresh_token)
            connect(session, cipher, user_id, refresh_token, NOW)
    return len(users)


def fill_standin(engine: Engine, standin: SpotifyStandIn) -> tuple[int, int]:
    """The catalogue in the stand-in, one track in MISSING_ONE_IN left out.

    Returns (tracks served, tracks left out)."""
    with engine.connect() as conn:
        artists = conn.execute(text("SELECT id, name, genres FROM artists ORDER BY id")).all()
        albums = conn.execute(
            text("SELECT id, artist_id, title, release_date FROM albums ORDER BY id")
        ).all()
        tracks = conn.execute(
            text(
                "SELECT id, title, artist_id, album_id, duration_ms, popularity "
                "FROM tracks ORDER BY id"
            )
        ).all()
    for artist in artists:
        standin.add_artist(
            StandInArtist(f"ar{artist.id}", artist.name, genres=tuple(artist.genres or ()))
        )
    for album in albums:
        released = album.release_date.isoformat() if album.release_date else "2020-01-01"
        standin.add_album(
            StandInAlbum(f"al{album.id}", album.title, (f"ar{album.artist_id}",), released)
        )
    missing = 0
    for track in tracks:
        if track.id % MISSING_ONE_IN == 0:
            missing += 1
            continue
        standin.add_track(
            StandInTrack(
                f"tr{track.id}",
                track.title,
                (f"ar{track.artist_id}",),
                f"al{track.album_id}",
                duration_ms=track.duration_ms or 200_000,
                popularity=track.popularity if track.popularity is not None else 50,
                isrc=f"QZBEN{track.id:07d}",
            )
        )
    return len(tracks) - missing, missing


# -- workers -----------------------------------------------------------------------------------


def start_workers(
    env: dict[str, str], count: int, data_dir: str
) -> tuple[list[subprocess.Popen[bytes]], list[IO[bytes]]]:
    tag = uuid.uuid4().hex[:6]
    workers, logs = [], []
    for i in range(count):
        log_file = open(Path(data_dir) / f"worker{i}.log", "wb")  # noqa: SIM115
        logs.append(log_file)
        workers.append(
            subprocess.Popen(
                celery_argv(
                    "worker",
                    "--queues",
                    "enrichment",
                    "--concurrency",
                    "1",
                    "--pool",
                    "prefork",
                    "--hostname",
                    f"enrichment{i}-{tag}@%h",
                    "--loglevel",
                    "WARNING",
                ),
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        )
    return workers, logs


def stop_workers(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (warm shutdown), then kill whatever is still there after STOP_TIMEOUT."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for worker in workers:
        try:
            worker.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"worker {worker.pid} ignored SIGTERM: killing it")
            worker.kill()
            worker.wait(timeout=10)


def show_worker_logs_on_error(data_dir: str) -> Callable[..., bool]:
    """An exit hook: when the bench fails, the end of each worker's log, before it goes."""

    def show(exc_type: type[BaseException] | None, *_: Any) -> bool:
        if exc_type is not None:
            for path in sorted(Path(data_dir).glob("worker*.log")):
                tail = path.read_text(errors="replace").splitlines()[-40:]
                log(f"the end of {path.name}:\n" + "\n".join(tail))
        return False

    return show


def wait_for_workers(client: Any, workers: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 120
    while len(client.control.ping(timeout=1.0) or []) < len(workers):
        if any(w.poll() is not None for w in workers):
            raise SystemExit("a worker exited at start-up (see its log: BENCH_KEEP=1 keeps it)")
        if time.monotonic() > deadline:
            raise SystemExit("workers did not answer a ping within 120 s")
        time.sleep(0.5)


def queued_messages(client: Any) -> int:
    from worker.queues import redis_keys

    with client.connection_for_write() as conn:
        redis_client = conn.default_channel.client
        return sum(int(redis_client.llen(key)) for key in redis_keys("enrichment"))


def active_tasks(client: Any) -> int:
    replies = client.control.inspect(timeout=1.0).active() or {}
    return sum(len(tasks) for tasks in replies.values())


# -- the run -------------------------------------------------------------------------------------


def wait_until_enriched(
    engine: Engine,
    standin: SpotifyStandIn,
    client: Any,
    workers: Sequence[subprocess.Popen[bytes]],
    started: float,
    timeout: float,
) -> str:
    """Poll until no listen of a live connection is pending ("done"), or until nothing
    moves while listens are pending and no task is queued or running ("stalled": no run
    will ever come for them), or ``timeout`` ("timeout")."""
    last_log = 0.0
    progress, moved = (-1, -1), time.monotonic()
    while True:
        with engine.connect() as conn:
            pending = int(conn.scalar(PENDING_SQL) or 0)
        now = time.monotonic()
        if pending == 0:
            return "done"
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker exited during the run")
        if now - started > timeout:
            return "timeout"
        if (pending, standin.count("")) != progress:
            progress, moved = (pending, standin.count("")), now
        elif (
            now - moved > STALL_SECONDS and not queued_messages(client) and not active_tasks(client)
        ):
            return "stalled"
        if now - last_log >= 10:
            last_log = now
            log(
                f"{now - started:5.0f} s: {pending:,} listens pending, "
                f"{standin.count('/v1/'):,} API requests so far"
            )
        time.sleep(0.25)


def wait_until_idle(engine: Engine, standin: SpotifyStandIn, client: Any) -> None:
    """Enriched is not finished: the last run may still fetch artists. Wait for quiet."""
    deadline = time.monotonic() + 120
    quiet_since, seen = time.monotonic(), standin.count("")
    while time.monotonic() < deadline:
        time.sleep(0.5)
        count = standin.count("")
        if count != seen:
            quiet_since, seen = time.monotonic(), count
            continue
        if time.monotonic() - quiet_since < 2.0:
            continue
        with engine.connect() as conn:
            unfetched = conn.scalar(
                text("SELECT count(*) FROM spotify_artists WHERE fetched_at IS NULL")
            )
        if not unfetched and not queued_messages(client) and not active_tasks(client):
            return
    log("workers still busy 120 s after the last listen was enriched: counting anyway")


def request_figures(records: Sequence[RecordedRequest]) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    queries: Counter[str] = Counter()
    partial: Counter[str] = Counter()
    ids: dict[str, Counter[str]] = {"tracks": Counter(), "artists": Counter()}
    for record in records:
        path = record.path
        if path == "/api/token":
            kinds["token"] += 1
            continue
        if path == "/v1/search":
            kinds["search"] += 1
            queries[record.query.get("q", "")] += 1
        elif path in ("/v1/tracks", "/v1/artists"):
            kind = path.removeprefix("/v1/")
            kinds[kind] += 1
            batch = [i for i in record.query.get("ids", "").split(",") if i]
            ids[kind].update(batch)
            partial[kind] += len(batch) < BATCH
        elif path.startswith(("/v1/tracks/", "/v1/artists/")):
            kinds["single"] += 1
            kind = path.split("/")[2]
            ids[kind][path.split("/")[3]] += 1
        else:
            kinds["other"] += 1
        if record.status == 429:
            kinds["429"] += 1
        elif record.status >= 500:
            kinds["5xx"] += 1
        elif record.status == 401:
            kinds["401"] += 1
    api = kinds["search"] + kinds["tracks"] + kinds["artists"] + kinds["single"] + kinds["other"]
    return {
        "api": api,
        "search": kinds["search"],
        "tracks_batch": kinds["tracks"],
        "artists_batch": kinds["artists"],
        "single": kinds["single"],
        "other": kinds["other"],
        "token": kinds["token"],
        "status_429": kinds["429"],
        "status_5xx": kinds["5xx"],
        "status_401": kinds["401"],
        "duplicate_searches": sum(n - 1 for n in queries.values() if n > 1),
        "duplicate_track_ids": sum(n - 1 for n in ids["tracks"].values() if n > 1),
        "duplicate_artist_ids": sum(n - 1 for n in ids["artists"].values() if n > 1),
        "partial_tracks_batches": partial["tracks"],
        "partial_artists_batches": partial["artists"],
        "artist_ids_per_batch": (
            round(sum(ids["artists"].values()) / kinds["artists"], 1) if kinds["artists"] else 0
        ),
    }


def database_figures(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        keys = conn.execute(
            text("""
            SELECT count(*) AS keys,
                   count(*) FILTER (WHERE query IS NOT NULL AND attempts > 0) AS searched,
                   count(*) FILTER (WHERE query IS NULL AND attempts > 0) AS looked_up,
                   count(*) FILTER (WHERE attempts > 1) AS asked_twice,
                   count(*) FILTER (WHERE attempts = 0) AS never_asked
            FROM spotify_matches""")
        ).one()
        artists = conn.execute(
            text("""
            SELECT count(*) FILTER (WHERE fetched_at IS NOT NULL) AS fetched,
                   count(*) FILTER (WHERE fetched_at IS NULL) AS unfetched
            FROM spotify_artists""")
        ).one()
        statuses = dict(
            conn.execute(text("SELECT enrichment_status, count(*) FROM listens GROUP BY 1")).all()
        )
        # Pending listens whose key is answered: no run claims an answered key again, and
        # the listen is registered, so none of them will ever be enriched.
        stranded = conn.scalar(
            text("""
            SELECT count(*) FROM listens AS l JOIN spotify_matches AS m ON m.id = l.match_id
            WHERE l.enrichment_status = 'pending' AND m.status <> 'pending'""")
        )
        last_enriched = conn.scalar(text("SELECT max(enriched_at) FROM listens"))
        pending = int(conn.scalar(PENDING_SQL) or 0)
    return {
        "keys": keys.keys,
        "keys_searched": keys.searched,
        "keys_looked_up": keys.looked_up,
        "keys_asked_twice": keys.asked_twice,
        "keys_never_asked": keys.never_asked,
        "artists_fetched": artists.fetched,
        "artists_unfetched": artists.unfetched,
        "listens_by_status": {k: int(v) for k, v in statuses.items()},
        "pending_live": pending,
        "pending_on_answered_keys": int(stranded or 0),
        "last_enriched": last_enriched.timestamp() if last_enriched else None,
    }


def task_figures(engine: Engine, client: Any, kick: float) -> dict[str, Any]:
    """What task_runs (and the runs' own reports) say: links, uploads, failures, waits."""
    with engine.connect() as conn:
        runs = conn.execute(
            text("""
            SELECT task_id, task_name, status, started_at, finished_at, runtime_seconds,
                   worker_host, error
            FROM task_runs WHERE task_name LIKE 'enrichment.%' ORDER BY started_at""")
        ).all()
    by_name: dict[str, Counter[str]] = defaultdict(Counter)
    errors: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for run in runs:
        by_name[run.task_name][run.status] += 1
        if run.error:
            errors[run.error.split(":")[0]] += 1
        busy[run.worker_host or "?"] += run.runtime_seconds or 0.0
        if run.status != "success":
            continue
        result = client.AsyncResult(run.task_id).result
        if isinstance(result, dict):
            for name in ("listens_registered", "keys_asked", "users_refreshed", "artists_fetched"):
                totals[name] += int(result.get(name) or 0)
            kind = "upload" if "upload_id" in result else "chain"
            totals[f"{kind}_{result.get('status')}"] += 1
    chain = [r for r in runs if r.task_name == "enrichment.enrich_pending" and r.finished_at]
    # A link is published as its predecessor commits: the gap is its wait on the queue.
    waits = [
        (later.started_at - earlier.finished_at).total_seconds()
        for earlier, later in itertools.pairwise(chain)
    ]
    first_start = runs[0].started_at.timestamp() - kick if runs else None
    return {
        "runs": {name: dict(counter) for name, counter in by_name.items()},
        "errors": dict(errors),
        "chain_links": len(chain),
        "chain_waits_seconds": round(sum(waits), 1),
        "chain_longest_wait_seconds": round(max(waits, default=0.0), 1),
        "first_run_started_after_kick": (
            round(first_start, 2) if first_start is not None else None
        ),
        "busy_seconds_by_worker": {host: round(s, 1) for host, s in busy.items()},
        "reported": dict(totals),
    }


def measure(options: Options, server: str, redis_url: str, keep: bool) -> dict[str, Any]:
    import redis

    from db.migrate import upgrade
    from worker.secrets import new_key

    token_key = new_key()
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database(server, keep))
        if keep:
            data_dir = tempfile.mkdtemp(prefix="bench-enrichment-")
            log(f"keeping {url} and the worker logs in {data_dir}")
        else:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory())
        standin = stack.enter_context(
            SpotifyStandIn(
                client_id=CLIENT_ID, client_secret=CLIENT_SECRET, latency=options.latency
            )
        )
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "DATA_DIR": data_dir,
            "SPOTIFY_CLIENT_ID": CLIENT_ID,
            "SPOTIFY_CLIENT_SECRET": CLIENT_SECRET,
            "SPOTIFY_API_URL": standin.api_url,
            "SPOTIFY_TOKEN_URL": standin.token_url,
            "SPOTIFY_REQUESTS_PER_MINUTE": str(options.rpm),
            "SPOTIFY_RATE_WINDOW_SECONDS": str(options.window),
            "TOKEN_ENCRYPTION_KEY": token_key,
        }
        if options.batch_size is not None:
            env["ENRICHMENT_BATCH_SIZE"] = str(options.batch_size)
        os.environ.update(env)
        redis.Redis.from_url(redis_url).flushdb()

        upgrade(url)
        engine = create_engine(url)
        stack.callback(engine.dispose)
        log(f"seeding {options.listens:,} listens over {options.tracks:,} tracks")
        seeded = seed_listens(url, options)
        hold_uploads(engine)
        connections = connect_users(engine, standin, token_key)
        served, missing = fill_standin(engine, standin)
        log(
            f"{seeded['uploads']} uploads, {connections} connected users; stand-in serves "
            f"{served:,} tracks ({missing} left out)"
        )

        from worker.celery_app import create_app
        from worker.settings import Settings

        client = create_app(Settings(database_url=url, redis_url=redis_url))
        workers, logs = start_workers(
            {**os.environ, "PYTHONUNBUFFERED": "1"}, options.workers, data_dir
        )
        for log_file in logs:
            stack.callback(log_file.close)
        stack.push(show_worker_logs_on_error(data_dir))
        stack.callback(stop_workers, workers)
        wait_for_workers(client, workers)
        standin.reset_log()
        log(f"{len(workers)} workers up: kicking enrich_pending and the uploads")

        kick = time.time()
        started = time.monotonic()
        client.send_task("enrichment.enrich_pending")
        with engine.begin() as conn:
            conn.execute(text("UPDATE upload_jobs SET status = 'completed', completed_at = now()"))
        outcome = wait_until_enriched(engine, standin, client, workers, started, options.timeout)
        if outcome != "done":
            log(f"{outcome}: listens still pending after {time.monotonic() - started:.0f} s")
        wait_until_idle(engine, standin, client)
        records = standin.recorded()
        figures = summarize(options, seeded, connections, missing, records, kick, engine, client)
        figures["outcome"] = outcome
    return figures


def summarize(
    options: Options,
    seeded: dict[str, int],
    connections: int,
    missing: int,
    records: Sequence[RecordedRequest],
    kick: float,
    engine: Engine,
    client: Any,
) -> dict[str, Any]:
    requests = request_figures(records)
    db = database_figures(engine)
    minimum = (
        db["keys_searched"]
        + math.ceil(db["keys_looked_up"] / BATCH)
        + math.ceil(db["artists_fetched"] / BATCH)
    )
    per_window = budget(options.rpm, options.window)
    api_times = sorted(r.at for r in records if r.path.startswith("/v1/"))
    last_enriched = db["last_enriched"] or kick
    wall = last_enriched - kick
    floor = floor_seconds(requests["api"], per_window, options.window)
    floor_minimum = floor_seconds(minimum, per_window, options.window)
    first_request = api_times[0] if api_times else kick
    last_request = api_times[-1] if api_times else kick
    head = first_request - kick
    # Past the floor between the first and the last request: windows below the budget.
    middle = last_request - first_request - floor
    tail = last_enriched - last_request
    listens = sum(db["listens_by_status"].values())
    return {
        "listens": listens,
        "uploads": seeded["uploads"],
        "catalogue_tracks": seeded["tracks"],
        "tracks_left_out": missing,
        "connected_users": connections,
        "workers": options.workers,
        "rpm": options.rpm,
        "window_seconds": options.window,
        "budget_per_window": per_window,
        "latency_seconds": options.latency,
        "requests": requests,
        "minimum": {
            "total": minimum,
            "searches": db["keys_searched"],
            "tracks_batches": math.ceil(db["keys_looked_up"] / BATCH),
            "artists_batches": math.ceil(db["artists_fetched"] / BATCH),
        },
        "excess": round(requests["api"] / minimum - 1, 4) if minimum else None,
        "wall_seconds": round(wall, 2),
        "last_request_seconds": round(last_request - kick, 2),
        "floor_seconds": floor,
        "floor_of_minimum_seconds": floor_minimum,
        "wall_vs_floor": round(wall / floor, 3) if floor else None,
        "outside_schedule_seconds": {
            "before_first_request": round(head, 2),
            "first_to_last_request_beyond_floor": round(middle, 2),
            "last_request_to_last_enriched": round(tail, 2),
            "total": round(wall - floor, 2),
        },
        "requests_per_window": per_window_counts(api_times, kick, options.window),
        "peak_rate_per_second": round(peak_rate(api_times, options.window), 1),
        "budget_rate_per_second": round(per_window / options.window, 1),
        "keys": db["keys"],
        "keys_asked_twice": db["keys_asked_twice"],
        "keys_never_asked": db["keys_never_asked"],
        "artists_fetched": db["artists_fetched"],
        "artists_unfetched": db["artists_unfetched"],
        "listens_by_status": db["listens_by_status"],
        "pending_live": db["pending_live"],
        "pending_on_answered_keys": db["pending_on_answered_keys"],
        "tasks": task_figures(engine, client, kick),
    }


# -- output ----------------------------------------------------------------------------------------


def share(part: int, whole: int) -> str:
    return f"{part:,} ({100 * part / whole:.1f}%)" if whole else f"{part:,}"


def table(f: dict[str, Any]) -> str:
    r, m, out = f["requests"], f["minimum"], f["outside_schedule_seconds"]
    statuses = f["listens_by_status"]
    listens = f["listens"]
    excess_ok = f["excess"] is not None and f["excess"] <= TARGET_EXCESS
    wall_ok = f["wall_vs_floor"] is not None and f["wall_vs_floor"] <= TARGET_WALL_RATIO
    tasks = f["tasks"]
    lines = [
        f"{listens:,} listens in {f['uploads']} uploads of {f['connected_users']} connected "
        f"users; {f['keys']:,} distinct keys; {f['workers']} workers; "
        f"{f['rpm']:,}/min = {f['budget_per_window']:,} per {f['window_seconds']:g} s; "
        f"stand-in latency {f['latency_seconds'] * 1000:g} ms",
        "",
        f"{'requests':<28}{'made':>10}{'minimum':>10}",
        f"{'  /v1/search':<28}{r['search']:>10,}{m['searches']:>10,}",
        f"{'  /v1/tracks (batch)':<28}{r['tracks_batch']:>10,}{m['tracks_batches']:>10,}",
        f"{'  /v1/artists (batch)':<28}{r['artists_batch']:>10,}{m['artists_batches']:>10,}",
        f"{'  single-item':<28}{r['single']:>10,}{0:>10,}",
        f"{'  API total':<28}{r['api']:>10,}{m['total']:>10,}",
        f"  excess over the minimum: {100 * (f['excess'] or 0):.2f}%  "
        f"(target <= {TARGET_EXCESS:.0%}: {'met' if excess_ok else 'MISSED'})",
        f"  token calls {r['token']} (not rate-limited), 429s {r['status_429']}, "
        f"5xx {r['status_5xx']}, 401s {r['status_401']}; "
        f"{r['artist_ids_per_batch']} artist ids a batch, "
        f"{r['partial_artists_batches']} artist batches partial",
        f"  duplicate searches (same q=) {r['duplicate_searches']}, track ids fetched twice "
        f"{r['duplicate_track_ids']}, artist ids fetched twice {r['duplicate_artist_ids']}",
        "",
        f"wall, kick to last listen enriched: {f['wall_seconds']:.1f} s; "
        f"floor for {r['api']:,} requests: {f['floor_seconds']:.0f} s "
        f"(for the minimum: {f['floor_of_minimum_seconds']:.0f} s)",
        (
            f"  wall / floor: {f['wall_vs_floor']}"
            f"  (target <= {TARGET_WALL_RATIO}: {'met' if wall_ok else 'MISSED'})"
            if f["wall_vs_floor"] is not None
            else "  wall / floor: n/a (every request fits in one window: no floor to compare)"
        ),
        f"  outside the limiter's schedule (wall - floor): {out['total']:.1f} s = before the "
        f"first request {out['before_first_request']:.1f} + first to last request beyond "
        f"the floor {out['first_to_last_request_beyond_floor']:.1f} + last request to last "
        f"listen {out['last_request_to_last_enriched']:.1f}",
        f"  peak rate {f['peak_rate_per_second']:,}/s over any {f['window_seconds']:g} s "
        f"(budget {f['budget_rate_per_second']:,}/s); requests per {f['window_seconds']:g} s "
        f"from the kick (budget {f['budget_per_window']:,}):",
        f"    {' '.join(str(n) for n in f['requests_per_window'])}",
        "",
        f"listens: matched {share(statuses.get('matched', 0), listens)}, not found "
        f"{share(statuses.get('not_found', 0), listens)}, failed "
        f"{share(statuses.get('failed', 0), listens)}, pending "
        f"{statuses.get('pending', 0):,} (of live connections {f['pending_live']:,}; on keys "
        f"already answered {f['pending_on_answered_keys']:,})",
        f"keys asked more than once {f['keys_asked_twice']}, never asked "
        f"{f['keys_never_asked']}; artists fetched {f['artists_fetched']:,}, "
        f"unfetched {f['artists_unfetched']}",
        "",
        f"task runs: {json.dumps(tasks['runs'])}; errors {json.dumps(tasks['errors'])}",
        f"  chain links {tasks['chain_links']}, waiting on the queue "
        f"{tasks['chain_waits_seconds']} s in all (longest {tasks['chain_longest_wait_seconds']}"
        f" s); first run started {tasks['first_run_started_after_kick']} s after the kick",
        f"  busy seconds by worker {json.dumps(tasks['busy_seconds_by_worker'])}",
        f"  the runs' reports: {json.dumps(tasks['reported'])}",
    ]
    if f["outcome"] != "done":
        lines.append(f"{f['outcome'].upper()}: listens were still pending at the end")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listens", type=int, default=100_000)
    parser.add_argument(
        "--tracks", type=int, default=None, help="catalogue size (default: 12%% of --listens)"
    )
    parser.add_argument(
        "--users", type=int, default=None, help="users seeded; 5%% import (default listens/50)"
    )
    parser.add_argument("--rpm", type=int, default=6_000, help="SPOTIFY_REQUESTS_PER_MINUTE")
    parser.add_argument("--window", type=float, default=5.0, help="SPOTIFY_RATE_WINDOW_SECONDS")
    parser.add_argument("--workers", type=int, default=2, help="enrichment worker processes")
    parser.add_argument(
        "--latency", type=float, default=0.005, help="stand-in seconds per API call"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="ENRICHMENT_BATCH_SIZE (default: 500)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    options = Options(
        listens=args.listens,
        tracks=args.tracks or max(100, args.listens * 12 // 100),
        users=args.users or max(100, args.listens // 50),
        rpm=args.rpm,
        window=args.window,
        workers=args.workers,
        latency=args.latency,
        batch_size=args.batch_size,
        timeout=args.timeout,
        seed=args.seed,
    )
    if budget(options.rpm, options.window) < 1:
        parser.error("--window too short for --rpm: the window must allow one request")
    server = os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    figures = measure(options, server, redis_url, keep=bool(os.environ.get("BENCH_KEEP")))
    print(json.dumps(figures, indent=2) if args.json else table(figures))


if __name__ == "__main__":
    main()
