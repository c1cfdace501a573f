"""Deterministic synthetic data for the music schema, bulk-loaded with COPY.

The model
---------
Catalogue. About ``tracks / 10`` artists, each with one to three genres drawn from a
fixed list whose popularity is itself skewed (pop and hip-hop common, ambient rare).
Every artist has one or more albums; release dates spread over fifteen years with
recent years denser, plus a few percent in the last 30 and 90 days so "new releases"
have material. Album sizes vary (singles to long LPs). A track belongs to an album,
takes one of its artist's genres and the album's release date, and lasts a log-normal
~3.5 minutes (1 to 12 minutes).

Popularity. Each track gets a score: its artist's popularity (log-normal) times a
per-track factor, boosted for releases of the last 90 days. Ranking by score gives the
track's Zipf rank; plays follow Zipf(s=1.1) over that rank, both globally and within a
genre. ``tracks.popularity`` is that Zipf weight on a log scale, 100 for the top track.

Listeners. Activity is log-normal (most users play little, a few play a lot), capped
at a few hours of listening a day. Each user has one to three favourite genres; a play
comes from a favourite genre (Zipf within the genre) with probability 0.7, otherwise
from the global chart. No track is played before its release date.

Sessions. Plays come in sessions of a few to tens of tracks, each play starting when
the previous one stopped (at its end, or earlier for a skip). Sessions start over the
last ``days`` days with a diurnal rhythm (evenings busy, 3-6 AM quiet); a user's
sessions never overlap and are at least 20 minutes apart, and every play is before
``now``. Most plays run the whole track; some are skips of a few seconds.

Imported listens. A few percent of users uploaded their history from another service:
completed ``upload_jobs``, each with ``listens`` from the year before the upload,
carrying catalogue names as text with the noise such exports have (case changes,
" - Remastered" suffixes, "feat." credits, missing album).

Determinism. Everything is drawn from one ``numpy.random.default_rng(spec.seed)`` in
an order that does not depend on the database, so a spec always produces the same
rows. Ids are reserved from the tables' identity sequences before each COPY; seeding
appends, and concurrent writers cannot collide with it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]

# (genre, share of artists); the order is the popularity order.
GENRES: tuple[tuple[str, float], ...] = (
    ("pop", 18),
    ("hip-hop", 16),
    ("rock", 12),
    ("electronic", 9),
    ("r&b", 7),
    ("latin", 7),
    ("indie", 6),
    ("country", 5),
    ("metal", 4),
    ("jazz", 3),
    ("classical", 3),
    ("folk", 3),
    ("soul", 2.5),
    ("reggae", 2),
    ("blues", 1.5),
    ("ambient", 1.5),
)
GENRE_NAMES = tuple(name for name, _ in GENRES)
_GENRE_P = np.array([w for _, w in GENRES]) / sum(w for _, w in GENRES)

# Relative session starts per UTC hour: evening peak, trough at 3-6 AM.
_DIURNAL = np.array(
    [
        0.60,
        0.40,
        0.25,
        0.15,
        0.12,
        0.15,
        0.30,
        0.60,
        0.90,
        0.90,
        0.80,
        0.80,
        0.90,
        0.90,
        0.85,
        0.85,
        0.95,
        1.10,
        1.30,
        1.45,
        1.50,
        1.40,
        1.20,
        0.90,
    ]
)
_DIURNAL_P = _DIURNAL / _DIURNAL.sum()

# Plain words only: names go into COPY text unescaped, so no tab, newline or backslash.
_ADJECTIVES = (
    "Amber",
    "Broken",
    "Crimson",
    "Dusty",
    "Electric",
    "Faded",
    "Golden",
    "Hollow",
    "Iron",
    "Jade",
    "Lonely",
    "Midnight",
    "Neon",
    "Oceanic",
    "Paper",
    "Quiet",
    "Restless",
    "Silver",
    "Tangled",
    "Velvet",
    "Wild",
    "Young",
    "Burning",
    "Cosmic",
    "Distant",
    "Frozen",
    "Gentle",
    "Hidden",
    "Lucky",
    "Painted",
    "Sacred",
    "Wandering",
)
_NOUNS = (
    "Arrows",
    "Bridges",
    "Canyon",
    "Dreams",
    "Echo",
    "Fire",
    "Garden",
    "Harbor",
    "Island",
    "Jungle",
    "Kites",
    "Lanterns",
    "Mirrors",
    "Night",
    "Orbit",
    "Parade",
    "Rain",
    "River",
    "Shadows",
    "Thunder",
    "Valley",
    "Waves",
    "Wolves",
    "Satellites",
    "Horizon",
    "Machines",
    "Mountain",
    "Rebels",
    "Roses",
    "Signals",
    "Summer",
    "Tides",
)
_NAME_NUMBERS = 999

ZIPF_EXPONENT = 1.1
FAVOURITE_SHARE = 0.7  # of a user's plays, from their favourite genres
FAVOURITE_WEIGHTS = np.array([0.6, 0.28, 0.12])  # first, second, third favourite
SKIP_RATE = 0.15
SESSION_GAP_MS = 20 * 60_000
MAX_SESSION_PLAYS = 100  # x 12 min max duration = 20 h, so a session fits in one day
MAX_LISTENING_HOURS_PER_DAY = 4.0
IMPORTING_USERS = 0.05  # share of users with uploaded history
CHUNK_ROWS = 200_000

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01: origin of PostgreSQL's binary timestamps
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
_COPY_TRAILER = b"\xff\xff"
_NULL = "\\N"


@dataclass(frozen=True)
class SeedSpec:
    users: int = 1000
    tracks: int = 5000
    plays: int = 100_000
    days: int = 90  # plays spread over the last `days` days before `now`
    seed: int = 42
    listens: int | None = None  # imported listens (text rows); default: plays // 20
    now: datetime | None = None  # aware UTC; default datetime.now(UTC) truncated to the hour


@dataclass(frozen=True)
class SeedReport:
    users: int
    artists: int
    albums: int
    tracks: int
    plays: int
    uploads: int
    listens: int
    seconds: float


@dataclass(frozen=True)
class _Catalogue:
    artist_names: list[str]
    artist_genres: I64  # (artists, 3): genre indices, the first n_genres used
    artist_n_genres: I64
    album_artist: I64
    album_titles: list[str]
    album_release_day: I64  # days since 1970-01-01
    track_titles: list[str]
    track_album: I64
    track_artist: I64
    track_genre: I64
    track_duration: I64  # ms
    track_popularity: I64
    track_release_ms: I64  # midnight UTC of the release date
    track_created_ms: I64
    global_tracks: I64  # track indices, most popular first
    global_cdf: F64  # Zipf CDF over global_tracks
    genre_tracks: I64  # track indices grouped by genre, each group most popular first
    genre_cdf: F64  # genre index + Zipf CDF within the genre: one searchsorted for all
    genre_end: I64  # exclusive end of each genre's group
    evergreen: int  # the most popular track released well before anything we generate


@dataclass(frozen=True)
class _Listeners:
    created_ms: I64
    activity: F64  # probability that a session is this user's
    favourites: I64  # (users, 3) genre indices
    favourite_cdf: F64  # (users, 3); 1.0 from the last favourite on


def seed(conn: psycopg.Connection, spec: SeedSpec, progress: Progress | None = None) -> SeedReport:
    """Append the spec's synthetic data through ``conn`` and commit."""
    started = time.perf_counter()
    _validate(spec)
    now = spec.now or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if now.tzinfo is None:
        raise ValueError("SeedSpec.now must be timezone-aware")
    now_ms = (now - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    report = _progress_or_nothing(progress)
    rng = np.random.default_rng(spec.seed)
    cat = _catalogue(rng, spec.tracks, now_ms, spec.days)
    lis = _listeners(rng, spec, cat, now_ms)

    with conn.transaction(), conn.cursor() as cur:
        artist_ids, album_ids, track_ids = _write_catalogue(cur, cat, report)
        user_ids = _reserve_ids(cur, "users", len(lis.created_ms))
        _copy_text(cur, "users", ("id", "created_at"), _rows(user_ids, _ts(lis.created_ms)), report)
        plays = _write_plays(cur, rng, spec, cat, lis, now_ms, user_ids, track_ids, report)
        uploads, listens = _write_listens(cur, rng, spec, cat, lis, now_ms, user_ids, report)
        # Fresh statistics, so the jobs run right after a seed get sensible plans.
        cur.execute("ANALYZE artists, albums, tracks, users, play_history, upload_jobs, listens")
    conn.commit()  # no-op unless the caller had a transaction open (then ours was a savepoint)
    return SeedReport(
        users=len(user_ids),
        artists=len(artist_ids),
        albums=len(album_ids),
        tracks=len(track_ids),
        plays=plays,
        uploads=uploads,
        listens=listens,
        seconds=time.perf_counter() - started,
    )


def seed_url(url: str, spec: SeedSpec, progress: Progress | None = None) -> SeedReport:
    """``seed`` through a new connection to an SQLAlchemy URL (postgresql+psycopg://...)."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        return seed(conn, spec, progress)


def _validate(spec: SeedSpec) -> None:
    if spec.users < 1 or spec.tracks < 1:
        raise ValueError("a seed needs at least one user and one track")
    if spec.plays < 0 or (spec.listens or 0) < 0:
        raise ValueError("plays and listens cannot be negative")
    if spec.days < 1:
        raise ValueError("days must be at least 1: a session can last most of a day")


def _progress_or_nothing(progress: Progress | None) -> Progress:
    return progress if progress is not None else lambda stage, done, total: None


# --- Generation -------------------------------------------------------------------------


def _zipf_cdf(n: int) -> F64:
    cdf = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -ZIPF_EXPONENT)
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # a uniform draw < 1 must always land inside
    return cdf


def _words(rng: np.random.Generator, n: int, patterns: Sequence[str]) -> list[str]:
    """Readable titles: a pattern with {a} an adjective, {b} and {c} nouns."""
    kind = rng.integers(0, len(patterns), n).tolist()
    adj = rng.integers(0, len(_ADJECTIVES), n).tolist()
    noun = rng.integers(0, len(_NOUNS), n).tolist()
    noun2 = rng.integers(0, len(_NOUNS), n).tolist()
    return [
        patterns[k].format(a=_ADJECTIVES[i], b=_NOUNS[j], c=_NOUNS[m])
        for k, i, j, m in zip(kind, adj, noun, noun2, strict=True)
    ]


def _catalogue(rng: np.random.Generator, n_tracks: int, now_ms: int, days: int) -> _Catalogue:
    n_artists = max(1, round(n_tracks / 10))
    n_genres = rng.choice(np.array([1, 2, 3]), size=n_artists, p=[0.5, 0.35, 0.15])
    # Gumbel top-k: distinct genres per artist, weighted by genre popularity, vectorised.
    keys = np.log(_GENRE_P) + rng.gumbel(size=(n_artists, len(GENRES)))
    artist_genres = np.argsort(-keys, axis=1)[:, :3].astype(np.int64)
    space = len(_ADJECTIVES) * len(_NOUNS) * _NAME_NUMBERS
    code = rng.choice(space, size=n_artists, replace=n_artists > space).tolist()
    artist_names = [
        f"{_ADJECTIVES[c // (len(_NOUNS) * _NAME_NUMBERS)]} "
        f"{_NOUNS[c // _NAME_NUMBERS % len(_NOUNS)]} {c % _NAME_NUMBERS + 1}"
        for c in code
    ]
    artist_pop = rng.lognormal(0.0, 1.0, n_artists)

    albums_per_artist = 1 + rng.poisson(1.2, n_artists)
    album_artist = np.repeat(np.arange(n_artists), albums_per_artist)[:n_tracks]
    n_albums = len(album_artist)
    # Release age: a few percent brand new, the rest over 15 years, denser towards now.
    kind = rng.random(n_albums)
    days_ago = np.where(
        kind < 0.03,
        rng.integers(0, 30, n_albums),
        np.where(
            kind < 0.07,
            rng.integers(30, 90, n_albums),
            90 + (rng.beta(1.0, 2.0, n_albums) * (15 * 365 - 90)).astype(np.int64),
        ),
    )
    album_release_day = now_ms // DAY_MS - days_ago
    album_titles = _words(rng, n_albums, ("{a} {b}", "{b}", "{b} of the {c}", "{a} {b}, Vol. 2"))

    # One track per album, the rest spread by a log-normal album size: singles to LPs.
    size = rng.lognormal(0.0, 0.8, n_albums)
    per_album = 1 + rng.multinomial(n_tracks - n_albums, size / size.sum())
    track_album = np.repeat(np.arange(n_albums), per_album)
    track_artist = album_artist[track_album]
    slot = np.where(rng.random(n_tracks) < 0.6, 0, rng.integers(0, n_genres[track_artist]))
    track_genre = artist_genres[track_artist, slot]
    duration = np.clip(rng.lognormal(math.log(210_000), 0.35, n_tracks), 60_000, 720_000)
    track_titles = _words(rng, n_tracks, ("{a} {b}", "{b} of the {c}", "The {a} {b}", "{b}"))
    score = (
        np.log(artist_pop[track_artist])
        + rng.normal(0.0, 0.8, n_tracks)
        + 1.5 * (days_ago[track_album] < 90)  # new releases are pushed
    )
    global_tracks = np.argsort(-score, kind="stable").astype(np.int64)
    rank = np.empty(n_tracks, dtype=np.int64)
    rank[global_tracks] = np.arange(n_tracks)
    popularity = np.rint(100 * (1 - np.log1p(rank) / math.log(n_tracks + 1))).astype(np.int64)
    release_ms = album_release_day[track_album] * DAY_MS
    created_ms = np.minimum(release_ms + rng.integers(0, DAY_MS, n_tracks), now_ms - 1)

    # Per-genre charts: the global order filtered by genre, each with its own Zipf CDF.
    by_genre = np.argsort(track_genre[global_tracks], kind="stable")
    genre_tracks = global_tracks[by_genre]
    sizes = np.bincount(track_genre, minlength=len(GENRES))
    genre_end = np.cumsum(sizes)
    genre_cdf = np.concatenate([g + _zipf_cdf(int(n)) for g, n in enumerate(sizes.tolist()) if n])

    # Valid at any time we generate (listens reach a year before the play window).
    old = np.flatnonzero(release_ms[global_tracks] < now_ms - (days + 370) * DAY_MS)
    evergreen = int(global_tracks[old[0]]) if old.size else int(np.argmin(release_ms))
    return _Catalogue(
        artist_names=artist_names,
        artist_genres=artist_genres,
        artist_n_genres=n_genres,
        album_artist=album_artist,
        album_titles=album_titles,
        album_release_day=album_release_day,
        track_titles=track_titles,
        track_album=track_album,
        track_artist=track_artist,
        track_genre=track_genre,
        track_duration=duration.astype(np.int64),
        track_popularity=popularity,
        track_release_ms=release_ms,
        track_created_ms=created_ms,
        global_tracks=global_tracks,
        global_cdf=_zipf_cdf(n_tracks),
        genre_tracks=genre_tracks,
        genre_cdf=genre_cdf,
        genre_end=genre_end,
        evergreen=evergreen,
    )


def _listeners(
    rng: np.random.Generator, spec: SeedSpec, cat: _Catalogue, now_ms: int
) -> _Listeners:
    n = spec.users
    activity = rng.lognormal(0.0, 1.3, n)
    # Nobody listens more than a few hours a day: cap the heaviest users' expected plays
    # (water-filling, so the cap holds after renormalising), unless the spec is infeasible.
    max_share = MAX_LISTENING_HOURS_PER_DAY * spec.days * HOUR_MS / 210_000 / max(spec.plays, 1)
    if max_share * n < 1:  # more plays than hours: spread evenly, sessions will overlap
        activity = np.ones(n)
    else:
        for _ in range(100):
            cap = max_share * activity.sum()
            if activity.max() <= cap:
                break
            activity = np.minimum(activity, cap)
    activity /= activity.sum()

    has_tracks = np.bincount(cat.track_genre, minlength=len(GENRES)) > 0
    n_fav = np.minimum(
        rng.choice(np.array([1, 2, 3]), size=n, p=[0.3, 0.45, 0.25]), has_tracks.sum()
    )
    log_p = np.full(len(GENRES), -np.inf)
    log_p[has_tracks] = np.log(_GENRE_P[has_tracks])
    favourites = np.argsort(-(log_p + rng.gumbel(size=(n, len(GENRES)))), axis=1)[:, :3]
    weights = np.where(np.arange(3) < n_fav[:, None], FAVOURITE_WEIGHTS, 0.0)
    favourite_cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    favourite_cdf[np.arange(3) >= n_fav[:, None] - 1] = 1.0
    window_start = now_ms - spec.days * DAY_MS
    created_ms = window_start - HOUR_MS - (rng.exponential(300.0, n) * DAY_MS).astype(np.int64)
    return _Listeners(created_ms, activity, favourites.astype(np.int64), favourite_cdf)


def _pick_once(rng: np.random.Generator, cat: _Catalogue, lis: _Listeners, users: I64) -> I64:
    n = len(users)
    # One rank draw serves both charts: only one of them is kept per play.
    u_genre, u_source, u_rank = rng.random(n), rng.random(n), rng.random(n)
    slot = (u_genre[:, None] >= lis.favourite_cdf[users]).sum(axis=1)
    genre = lis.favourites[users, slot]
    pos = np.minimum(
        np.searchsorted(cat.genre_cdf, genre + u_rank, side="right"), cat.genre_end[genre] - 1
    )
    rank = np.minimum(
        np.searchsorted(cat.global_cdf, u_rank, side="right"), len(cat.global_tracks) - 1
    )
    return np.where(u_source < FAVOURITE_SHARE, cat.genre_tracks[pos], cat.global_tracks[rank])


def _pick(
    rng: np.random.Generator, cat: _Catalogue, lis: _Listeners, users: I64, at_ms: I64
) -> I64:
    """Tracks for plays by ``users`` at ``at_ms``, never before a track's release."""
    picks = _pick_once(rng, cat, lis, users)
    for _ in range(8):
        early = np.flatnonzero(cat.track_release_ms[picks] > at_ms)
        if not early.size:
            return picks
        picks[early] = _pick_once(rng, cat, lis, users[early])
    picks[cat.track_release_ms[picks] > at_ms] = cat.evergreen
    return picks


def _diurnal_times(rng: np.random.Generator, n: int, start_ms: int, end_ms: int) -> I64:
    """``n`` instants in [start_ms, end_ms), uniform over days, diurnal within a day."""
    first_day = start_ms // DAY_MS
    n_days = -(-end_ms // DAY_MS) - first_day
    out: list[I64] = []
    have = 0
    while have < n:  # rejection at the window's ragged ends; deterministic for a given rng
        m = int((n - have) * 1.2) + 16
        t = (
            (first_day + rng.integers(0, n_days, m)) * DAY_MS
            + rng.choice(24, size=m, p=_DIURNAL_P) * HOUR_MS
            + rng.integers(0, HOUR_MS, m)
        )
        t = t[(t >= start_ms) & (t < end_ms)][: n - have]
        out.append(t)
        have += len(t)
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def _session_lengths(rng: np.random.Generator, plays: int) -> I64:
    lengths: list[I64] = []
    total = 0
    while total < plays:
        m = plays // 10 + 16
        chunk = np.clip(np.rint(rng.lognormal(math.log(8), 0.9, m)), 1, MAX_SESSION_PLAYS)
        lengths.append(chunk.astype(np.int64))
        total += int(chunk.sum())
    out = np.concatenate(lengths) if lengths else np.empty(0, dtype=np.int64)
    k = int(np.searchsorted(np.cumsum(out), plays))  # first session reaching `plays`
    out = out[: k + 1] if plays else out[:0]
    if plays:
        out[-1] -= out.sum() - plays
    return out


def _chunks(lengths: I64, rows: int = CHUNK_ROWS) -> list[tuple[int, int]]:
    """Split consecutive groups of ``lengths`` rows into runs of about ``rows`` rows."""
    ends = np.cumsum(lengths)
    cuts = np.searchsorted(ends, np.arange(rows, int(ends[-1]) if len(ends) else 0, rows))
    bounds = [0, *sorted(set((cuts + 1).tolist()) - {0, len(lengths)}), len(lengths)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _group_cummax(values: I64, group: I64) -> I64:
    """Running maximum that restarts at each group (rows sorted by ascending group)."""
    lo, span = int(values.min()), int(values.max() - values.min()) + 1
    # Offsetting each group above all earlier ones keeps one accumulate from leaking.
    return np.maximum.accumulate(values - lo + group * span) - group * span + lo


def _layout(start: I64, user: I64, occupancy: I64, latest: I64, window_start: int) -> I64:
    """Session starts: as drawn where possible, but no overlaps within a user, all in time.

    Forward: a session starts no earlier than the user's previous session plus its
    occupancy (duration and gap). Backward: no later than ``latest``, nor than the next
    session minus its own occupancy. Both are running extremes of shifted values.
    """
    order = np.lexsort((start, user))
    u, s, occ, lat = user[order], start[order], occupancy[order], latest[order]
    group = np.concatenate(([0], np.cumsum(u[1:] != u[:-1]))).astype(np.int64)
    first = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1])))
    excl = np.cumsum(occ) - occ
    before = excl - excl[first][group]  # occupancy of the user's earlier sessions
    forward = _group_cummax(s - before, group) + before
    after = np.add.reduceat(occ, first)[group] - before  # this session's and later ones
    rev = group[-1] - group[::-1]
    backward = -_group_cummax(-(np.minimum(forward, lat) + after)[::-1], rev)[::-1] - after
    out = np.empty_like(start)
    # Only an impossible spec (more listening than hours in the window) needs the clamp.
    out[order] = np.maximum(backward, window_start)
    return out


# --- Writing ----------------------------------------------------------------------------


def _reserve_ids(cur: psycopg.Cursor, table: str, n: int) -> I64:
    """``n`` fresh ids from the table's identity sequence, ascending."""
    cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,))
    row = cur.fetchone()
    assert row is not None and row[0]
    cur.execute("SELECT nextval(%s::regclass) FROM generate_series(1, %s)", (row[0], n))
    return np.sort(np.fromiter((r[0] for r in cur), dtype=np.int64, count=n))


def _ts(ms: I64) -> list[str]:
    return [t + "+00" for t in np.datetime_as_string(ms.astype("datetime64[ms]")).tolist()]


def _dates(days: I64) -> list[str]:
    return np.datetime_as_string(days.astype("datetime64[D]")).tolist()  # type: ignore[no-any-return]


def _rows(*columns: Sequence[object] | I64) -> list[str]:
    values = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns]
    return ["\t".join(map(str, row)) + "\n" for row in zip(*values, strict=True)]


def _copy_statement(table: str, columns: Sequence[str], binary: bool = False) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(" (FORMAT BINARY)" if binary else ""),
    )


def _copy_text(
    cur: psycopg.Cursor,
    table: str,
    columns: Sequence[str],
    lines: list[str],
    report: Progress,
    stage: str | None = None,
) -> None:
    for lo in range(0, len(lines), CHUNK_ROWS):
        with cur.copy(_copy_statement(table, columns)) as copy:
            copy.write("".join(lines[lo : lo + CHUNK_ROWS]))
        report(stage or table, min(lo + CHUNK_ROWS, len(lines)), len(lines))


def _copy_binary(cur: psycopg.Cursor, table: str, columns: Sequence[tuple[str, str, I64]]) -> None:
    """COPY integer-like columns as one binary block built by numpy, no per-row Python.

    ``columns`` are (name, big-endian numpy format, values); timestamps must already be
    microseconds since 2000-01-01.
    """
    fields = [("n", ">i2")]
    for i, (_, fmt, _) in enumerate(columns):
        fields += [(f"len{i}", ">i4"), (f"val{i}", fmt)]
    block = np.empty(len(columns[0][2]), dtype=np.dtype(fields))
    block["n"] = len(columns)
    for i, (_, fmt, values) in enumerate(columns):
        block[f"len{i}"] = np.dtype(fmt).itemsize
        block[f"val{i}"] = values
    with cur.copy(_copy_statement(table, [c[0] for c in columns], binary=True)) as copy:
        copy.write(_COPY_SIGNATURE + block.tobytes() + _COPY_TRAILER)


def _write_catalogue(
    cur: psycopg.Cursor, cat: _Catalogue, report: Progress
) -> tuple[I64, I64, I64]:
    artist_ids = _reserve_ids(cur, "artists", len(cat.artist_names))
    genres = [
        "{" + ",".join(f'"{GENRE_NAMES[g]}"' for g in row[:k]) + "}"
        for row, k in zip(cat.artist_genres.tolist(), cat.artist_n_genres.tolist(), strict=True)
    ]
    _copy_text(
        cur,
        "artists",
        ("id", "name", "genres"),
        _rows(artist_ids, cat.artist_names, genres),
        report,
    )

    album_ids = _reserve_ids(cur, "albums", len(cat.album_titles))
    _copy_text(
        cur,
        "albums",
        ("id", "artist_id", "title", "release_date"),
        _rows(
            album_ids, artist_ids[cat.album_artist], cat.album_titles, _dates(cat.album_release_day)
        ),
        report,
    )

    track_ids = _reserve_ids(cur, "tracks", len(cat.track_titles))
    columns = (
        "id",
        "title",
        "artist_id",
        "album_id",
        "genre",
        "duration_ms",
        "popularity",
        "release_date",
        "created_at",
    )
    _copy_text(
        cur,
        "tracks",
        columns,
        _rows(
            track_ids,
            cat.track_titles,
            artist_ids[cat.track_artist],
            album_ids[cat.track_album],
            [GENRE_NAMES[g] for g in cat.track_genre.tolist()],
            cat.track_duration,
            cat.track_popularity,
            _dates(cat.track_release_ms // DAY_MS),
            _ts(cat.track_created_ms),
        ),
        report,
    )
    return artist_ids, album_ids, track_ids


def _skips(rng: np.random.Generator, duration: I64) -> I64:
    """ms_played: the whole track, or for a skip a few seconds to a minute or so of it."""
    n = len(duration)
    skip = rng.random(n) < SKIP_RATE
    heard = np.clip(rng.lognormal(math.log(25_000), 0.9, n), 1_000, duration - 1)
    return np.where(skip, heard.astype(np.int64), duration)


def _write_plays(
    cur: psycopg.Cursor,
    rng: np.random.Generator,
    spec: SeedSpec,
    cat: _Catalogue,
    lis: _Listeners,
    now_ms: int,
    user_ids: I64,
    track_ids: I64,
    report: Progress,
) -> int:
    window_start = now_ms - spec.days * DAY_MS
    length = _session_lengths(rng, spec.plays)
    n_sessions = len(length)
    if not n_sessions:
        return 0
    user = rng.choice(spec.users, size=n_sessions, p=lis.activity).astype(np.int64)
    drawn = _diurnal_times(rng, n_sessions, window_start, now_ms)
    offset = np.cumsum(length) - length  # first play of each session in `picks`

    # Pass 1: choose every play's track (4 bytes a play kept) to learn session durations.
    picks = np.empty(spec.plays, dtype=np.int32)
    span = np.empty(n_sessions, dtype=np.int64)  # start of first to end of last track
    last = np.empty(n_sessions, dtype=np.int64)  # duration of the last track
    for a, b in _chunks(length):
        lens = length[a:b]
        lo, hi = int(offset[a]), int(offset[b - 1] + length[b - 1])
        # Two days' margin: the layout seldom moves a session earlier, and then by hours
        # (pass 2 catches anything further).
        at = np.repeat(drawn[a:b] - 2 * DAY_MS, lens)
        chunk = _pick(rng, cat, lis, np.repeat(user[a:b], lens), at)
        picks[lo:hi] = chunk
        duration = cat.track_duration[chunk]
        span[a:b] = np.add.reduceat(duration, offset[a:b] - lo)
        last[a:b] = duration[offset[a:b] - lo + lens - 1]
    # A session pushed against `now` ends a random while before it, not all at now - 1 ms.
    latest = now_ms - 1 - (span - last) - rng.integers(0, HOUR_MS, n_sessions)
    begin = _layout(drawn, user, span + SESSION_GAP_MS, latest, window_start)

    # Pass 2: in time order, so play_history's heap is laid out like a real one.
    by_time = np.argsort(begin, kind="stable")
    done = 0
    for a, b in _chunks(length[by_time]):
        sess = by_time[a:b]
        lens = length[sess]
        m = int(lens.sum())
        first = np.cumsum(lens) - lens
        within = np.arange(m) - np.repeat(first, lens)
        track = picks[np.repeat(offset[sess], lens) + within].astype(np.int64)
        # The next play starts when this one stops: a skip shortens the session (so it
        # still fits the room pass 1 laid out for it at full durations).
        ms_played = _skips(rng, cat.track_duration[track])
        elapsed = np.cumsum(ms_played) - ms_played
        played = np.repeat(begin[sess], lens) + elapsed - np.repeat(elapsed[first], lens)
        # Only a session moved back further than pass 1's margin can precede a release:
        # rare enough that any always-released track will do.
        early = cat.track_release_ms[track] > played
        track[early] = cat.evergreen
        ms_played = np.minimum(ms_played, cat.track_duration[track])
        order = np.argsort(played, kind="stable")
        _copy_binary(
            cur,
            "play_history",
            (
                ("user_id", ">i8", user_ids[np.repeat(user[sess], lens)][order]),
                ("track_id", ">i8", track_ids[track][order]),
                ("played_at", ">i8", (played[order] - _PG_EPOCH_MS) * 1000),
                ("ms_played", ">i4", ms_played[order]),
            ),
        )
        done += m
        report("plays", done, spec.plays)
    return done


def _noisy_names(
    rng: np.random.Generator, cat: _Catalogue, track: I64
) -> tuple[list[str], list[str], list[str]]:
    """Listens' artist, track and album names as exports write them: mostly exact."""
    n = len(track)
    case, suffix, feat = rng.random(n).tolist(), rng.random(n).tolist(), rng.random(n).tolist()
    no_album = (rng.random(n) < 0.02).tolist()
    guest = rng.integers(0, len(cat.artist_names), n).tolist()
    year = rng.integers(2005, 2025, n).tolist()
    artists, titles, albums = [], [], []
    for i, t in enumerate(track.tolist()):
        artist = cat.artist_names[cat.track_artist[t]]
        title = cat.track_titles[t]
        album = _NULL if no_album[i] else cat.album_titles[cat.track_album[t]]
        if case[i] < 0.04:
            artist, title = artist.lower(), title.lower()
        elif case[i] < 0.06:
            artist = artist.upper()
        if suffix[i] < 0.03:
            title += " - Remastered"
        elif suffix[i] < 0.05:
            title += f" - Remastered {year[i]}"
        if feat[i] < 0.04:
            title += f" (feat. {cat.artist_names[guest[i]]})"
        elif feat[i] < 0.06:
            artist += f" feat. {cat.artist_names[guest[i]]}"
        artists.append(artist)
        titles.append(title)
        albums.append(album)
    return artists, titles, albums


def _write_listens(
    cur: psycopg.Cursor,
    rng: np.random.Generator,
    spec: SeedSpec,
    cat: _Catalogue,
    lis: _Listeners,
    now_ms: int,
    user_ids: I64,
    report: Progress,
) -> tuple[int, int]:
    n = spec.plays // 20 if spec.listens is None else spec.listens
    if not n:
        return 0, 0
    n_importers = min(spec.users, max(1, round(spec.users * IMPORTING_USERS)))
    importers = rng.choice(spec.users, size=n_importers, replace=False)
    job_user = np.repeat(importers, 1 + (rng.random(len(importers)) < 0.3))[:n].astype(np.int64)
    n_jobs = len(job_user)
    window_start = now_ms - spec.days * DAY_MS
    created = window_start + rng.integers(0, spec.days * DAY_MS - HOUR_MS, n_jobs)
    completed = created + rng.integers(5_000, 30 * 60_000, n_jobs)
    job_ids = _reserve_ids(cur, "upload_jobs", n_jobs)
    _copy_text(
        cur,
        "upload_jobs",
        ("id", "user_id", "status", "created_at", "completed_at"),
        _rows(job_ids, user_ids[job_user], ["completed"] * n_jobs, _ts(created), _ts(completed)),
        report,
        "uploads",
    )

    size = rng.lognormal(0.0, 1.0, n_jobs)
    job = np.repeat(np.arange(n_jobs), 1 + rng.multinomial(n - n_jobs, size / size.sum()))
    # History from the year before the upload: whole days back, then a diurnal hour.
    midnight = created[job] // DAY_MS * DAY_MS
    played = (
        midnight
        - rng.integers(1, 366, n) * DAY_MS
        + rng.choice(24, size=n, p=_DIURNAL_P) * HOUR_MS
        + rng.integers(0, HOUR_MS, n)
    )
    order = np.lexsort((played, job))
    job, played = job[order], played[order]
    track = _pick(rng, cat, lis, job_user[job], played)
    artists, titles, albums = _noisy_names(rng, cat, track)
    columns = (
        "user_id",
        "upload_id",
        "played_at",
        "artist_name",
        "track_name",
        "album_name",
        "ms_played",
    )
    _copy_text(
        cur,
        "listens",
        columns,
        _rows(
            user_ids[job_user[job]],
            job_ids[job],
            _ts(played),
            artists,
            titles,
            albums,
            _skips(rng, cat.track_duration[track]),
        ),
        report,
    )
    return n_jobs, n
