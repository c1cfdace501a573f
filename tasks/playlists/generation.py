"""Smart playlist generation, behind ``playlists.generate``, ``generate_all`` and their chunks.

The four types (the spec):

- daily_mix (daily, expires in 24 h): 60 % the user's tracks of the last 30 days,
  favourites first; 40 % similar tracks (favourite artists, or popular in favourite
  genres) not played in the last 30 days. Each part keeps its share: when one part runs
  short the other shrinks with it, so the playlist is shorter, never off-balance. A user
  with no history gets a cold-start mix of trending and popular tracks, marked
  ``cold_start``.
- discovery_weekly (Mondays, 7 days): never played, in the user's top 5 genres, released
  in the last 90 days; popularity plus randomness.
- new_for_you (daily, 24 h): released in the last 30 days by the user's top 10 artists.
- forgotten_favorites (Mondays, 7 days): played 3 or more times, not once in 60 days.

For every type: at most PLAYLIST_LENGTH tracks, no duplicates, at most
PLAYLIST_MAX_ARTIST_RUN tracks by one artist in a row, randomness seeded by user, type and
period (a re-run the same day draws the same playlist), and the new playlist replaces the
old one in the same transaction.

Work is per chunk of users: PostgreSQL picks each user's ranked candidates for all four
types in a few set-based statements over temp tables of the chunk's users
(playlists.sql beside this module); Python only arranges at most a few dozen ids a playlist (the
daily mix's parts interleaved, artists spread), which is clearer as a loop than as SQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.models import PLAYLIST_TYPES
from db.queries import queries
from worker.errors import PermanentError
from worker.settings import get_settings

SQL = queries("tasks.playlists", "playlists")
LISTENING_SQL = queries("tasks.listening", "listening")  # the aggregation's watermark
ACTIVE_WITHIN = dt.timedelta(days=90)  # users who joined or played since are "active"
CHUNK_USERS = 1000  # users per chunk task
# The most popular tracks of a genre that genre picks are drawn from. Ranking candidates
# is most of a chunk's cost, and a pool of 30 a genre (150 over five genres, plus the
# favourite artists' tracks) leaves room for randomness in 20 similar or 50 discovery picks.
GENRE_POOL = 30
COLD_START_POOL = 100  # trending and most popular tracks a cold-start mix comes from
TOP_ARTISTS, TOP_GENRES = 10, 5
# The daily mix's parts and their shares of it, in percent.
DAILY_MIX_SHARES = {"recent": 60, "similar": 40}
NEW_RELEASE_DAYS, DISCOVERY_RELEASE_DAYS = 30, 90
FORGOTTEN_MIN_PLAYS, FORGOTTEN_AFTER = 3, dt.timedelta(days=60)


@dataclass(frozen=True)
class Rules:
    length: int
    max_artist_run: int

    @classmethod
    def from_settings(cls) -> Rules:
        settings = get_settings()
        return cls(settings.playlist_length, settings.playlist_max_artist_run)


@dataclass(frozen=True)
class Kind:
    name: str
    weekly: bool

    @property
    def lifetime(self) -> dt.timedelta:
        return dt.timedelta(days=7) if self.weekly else dt.timedelta(days=1)

    def period_start(self, today: dt.date) -> dt.date:
        return today - dt.timedelta(days=today.weekday()) if self.weekly else today


KINDS = {
    "daily_mix": Kind("daily_mix", weekly=False),
    "discovery_weekly": Kind("discovery_weekly", weekly=True),
    "new_for_you": Kind("new_for_you", weekly=False),
    "forgotten_favorites": Kind("forgotten_favorites", weekly=True),
}
assert set(KINDS) == set(PLAYLIST_TYPES)


class Candidate(NamedTuple):
    # A NamedTuple, not a dataclass: a chunk builds a few hundred thousand of these.
    track_id: int
    artist_id: int


def seed_for(kind: Kind, period: dt.date) -> int:
    """A stable 48-bit seed per type and period (the user is mixed in by the SQL)."""
    digest = hashlib.blake2b(f"{kind.name}:{period.isoformat()}".encode(), digest_size=6)
    return int.from_bytes(digest.digest(), "big")


def arrange(parts: Sequence[tuple[Sequence[Candidate], int]], max_artist_run: int) -> list[int]:
    """Interleave ranked parts, each up to its quota, with no artist run over the limit.

    At each step the part furthest behind its quota gives its best remaining track that
    does not extend an artist's run too far; a part with no such track is closed. So the
    result keeps the parts' shares, their order, and the rules, possibly a little short.
    """
    queues = [list(candidates) for candidates, _ in parts]
    quotas = [quota for _, quota in parts]
    taken = [0] * len(parts)
    placed: list[int] = []
    seen: set[int] = set()
    # The artist the playlist ends with and how many in a row: kept as it grows, rather
    # than rebuilt from the tail at every step (a chunk arranges a few thousand lists).
    run_artist: int | None = None
    run_length = 0
    while True:
        open_parts = [i for i, queue in enumerate(queues) if queue and taken[i] < quotas[i]]
        if not open_parts:
            return placed
        part = min(open_parts, key=lambda i: (taken[i] / quotas[i], i))
        queue = queues[part]
        blocked = run_artist if run_length >= max_artist_run else None
        for index, (track_id, artist_id) in enumerate(queue):
            if track_id in seen or artist_id == blocked:
                continue
            # Skipped ones stay queued: a track held back by an artist run fits later.
            del queue[index]
            placed.append(track_id)
            seen.add(track_id)
            taken[part] += 1
            run_length = run_length + 1 if artist_id == run_artist else 1
            run_artist = artist_id
            break
        else:
            queues[part] = []


def split(total: int, shares: Sequence[int]) -> list[int]:
    """``total`` places divided by ``shares`` (weights): rounded, the last part the rest."""
    weight = sum(shares)
    quotas = [round(total * share / weight) for share in shares[:-1]]
    return [*quotas, total - sum(quotas)]


def arrange_in_shares(
    parts: Sequence[tuple[Sequence[Candidate], int]], length: int, max_artist_run: int
) -> list[int]:
    """``arrange`` for parts that must keep their shares (weights) of the playlist.

    When a part cannot fill its share (too few candidates, or artist runs hold them back),
    the others shrink with it: the playlist is shorter, never off-balance. Each pass tries
    the longest playlist the last one's counts can carry, so it ends within a few passes.
    """
    shares = [share for _, share in parts]
    members = [{candidate.track_id for candidate in candidates} for candidates, _ in parts]
    total = length
    while True:
        quotas = split(total, shares)
        placed = arrange(
            [(candidates, quota) for (candidates, _), quota in zip(parts, quotas, strict=True)],
            max_artist_run,
        )
        counts = [sum(track_id in ids for track_id in placed) for ids in members]
        if counts == quotas:
            return placed
        carried = min(
            count * sum(shares) // share
            for count, share in zip(counts, shares, strict=True)
            if share
        )
        total = min(total - 1, carried)


def _by_user(rows: Iterable[Sequence[Any]]) -> dict[int, dict[str, list[Candidate]]]:
    # One row a user and part, its candidates as arrays in rank order: a chunk fetches a
    # thousand-odd rows rather than one a candidate, which cost more than the arranging.
    grouped: dict[int, dict[str, list[Candidate]]] = defaultdict(dict)
    for user_id, part, track_ids, artist_ids in rows:
        grouped[user_id][part] = list(map(Candidate, track_ids, artist_ids))
    return grouped


def _stage_chunk(session: Session, now: dt.datetime, users: dict[str, Any]) -> None:
    watermark = session.scalar(LISTENING_SQL["read_watermark"])
    session.execute(SQL["create_chunk_users"])
    if "user_id" in users:
        session.execute(SQL["stage_one_user"], users)
        ids = {"lo": users["user_id"], "hi": users["user_id"] + 1}
    else:
        session.execute(SQL["stage_active_users"], {**users, "active_since": now - ACTIVE_WITHIN})
        ids = {"lo": users["lo"], "hi": users["hi"]}
    # Temp tables are never auto-analyzed; each is analyzed as soon as it is filled, so the
    # statements that read it are planned for its real size (one user or a thousand).
    session.execute(text("ANALYZE chunk_users"))
    stages: list[tuple[str, dict[str, Any]]] = [
        ("chunk_history", {**ids, "watermark": watermark or 0}),
        ("chunk_recent", {**ids, "now": now, "month_start": now - dt.timedelta(days=30)}),
        ("chunk_taste", {"top_artists": TOP_ARTISTS, "top_genres": TOP_GENRES}),
    ]
    for table, params in stages:
        session.execute(SQL[f"create_{table}"])
        session.execute(SQL[f"stage_{table}"], params)
        session.execute(text(f"ANALYZE {table}"))


def _draw(
    session: Session, kind: Kind, now: dt.datetime, today: dt.date, rules: Rules
) -> dict[int, tuple[list[int], bool]]:
    """Each chunk user's playlist of ``kind``: (track ids in order, cold start?)."""
    seed = seed_for(kind, kind.period_start(today))
    margin = rules.length + 2 * rules.max_artist_run + 10  # spares for artist spreading
    params: dict[str, Any] = {
        "seed": seed,
        "per_part": margin,
        "pool": GENRE_POOL,
        "cold_pool": COLD_START_POOL,
        "today": today,
    }
    if kind.name == "daily_mix":
        drawn: dict[int, tuple[list[int], bool]] = {}
        for user, parts in _by_user(session.execute(SQL["daily_mix"], params).all()).items():
            shares = [(parts.get(name, []), share) for name, share in DAILY_MIX_SHARES.items()]
            drawn[user] = (arrange_in_shares(shares, rules.length, rules.max_artist_run), False)
        for user, parts in _by_user(session.execute(SQL["cold_start"], params).all()).items():
            shares = [(parts["cold_start"], rules.length)]
            drawn[user] = (arrange(shares, rules.max_artist_run), True)
        return drawn
    if kind.name == "discovery_weekly":
        params["released_after"] = today - dt.timedelta(days=DISCOVERY_RELEASE_DAYS)
    elif kind.name == "new_for_you":
        params["released_after"] = today - dt.timedelta(days=NEW_RELEASE_DAYS)
    else:
        params.update(min_plays=FORGOTTEN_MIN_PLAYS, forgotten_before=now - FORGOTTEN_AFTER)
    return {
        user: (arrange([(candidates, rules.length)], rules.max_artist_run), False)
        for user, parts in _by_user(session.execute(SQL[kind.name], params).all()).items()
        for candidates in parts.values()
    }


def generate_playlists(
    session: Session,
    kinds: Sequence[str],
    now: dt.datetime,
    *,
    lo: int | None = None,
    hi: int | None = None,
    user_id: int | None = None,
    rules: Rules | None = None,
) -> dict[str, int]:
    """Write ``kinds`` for the active users with lo <= id < hi, or for one user (active or
    not); return how many playlists of each type were written, and how many cold starts."""
    rules = rules or Rules.from_settings()
    today = now.astimezone(ZoneInfo(get_settings().timezone)).date()
    users = {"user_id": user_id} if user_id is not None else {"lo": lo, "hi": hi}
    _stage_chunk(session, now, users)
    written = {"cold_start": 0}
    for name in kinds:
        kind = KINDS[name]
        drawn = {user: d for user, d in _draw(session, kind, now, today, rules).items() if d[0]}
        payload = [
            {"user_id": user, "track_ids": ids, "cold_start": cold}
            for user, (ids, cold) in drawn.items()
        ]
        session.execute(
            SQL["replace_playlists"],
            {
                "payload": json.dumps(payload),
                "playlist_type": name,
                "now": now,
                "expires_at": now + kind.lifetime,
                "period_start": kind.period_start(today),
            },
        )
        written[name] = len(payload)
        written["cold_start"] += sum(1 for _, cold in drawn.values() if cold)
    return written


def check_kind(playlist_type: str) -> None:
    if playlist_type not in KINDS:
        raise PermanentError(f"unknown playlist type {playlist_type!r}; valid: {', '.join(KINDS)}")


def kinds_due(playlist_type: str | None, today: dt.date, force: bool) -> list[str]:
    """The types to generate: weekly ones only on Mondays, unless forced."""
    if playlist_type is not None:
        check_kind(playlist_type)
    names = [playlist_type] if playlist_type else list(KINDS)
    return [n for n in names if force or not KINDS[n].weekly or today.weekday() == 0]


def chunk_ranges(session: Session, now: dt.datetime) -> list[tuple[int, int]]:
    low, high = session.execute(
        SQL["active_user_id_range"], {"active_since": now - ACTIVE_WITHIN}
    ).one()
    if low is None:
        return []
    return [(lo, min(lo + CHUNK_USERS, high + 1)) for lo in range(low, high + 1, CHUNK_USERS)]


def add_up(results: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for result in results:
        for name, count in result.items():
            total[name] += count
    return dict(total)


def day_start(now: dt.datetime, timezone: str) -> dt.datetime:
    """Midnight of ``now``'s day in ``timezone`` (TIMEZONE), as an aware time."""
    local = now.astimezone(ZoneInfo(timezone))
    return dt.datetime.combine(local.date(), dt.time(), tzinfo=ZoneInfo(timezone))


def aggregation_pending(session: Session, now: dt.datetime, timezone: str) -> str | None:
    """What the day's playlists wait for, or None: the day's ``listening.aggregate``, while
    plays wait to be folded in and none has finished since the day began. Playlists read
    the rollups it writes; built before it, a day's mixes miss the day's plays (tried:
    side by side on a fresh seed gave no daily mix at all)."""
    since = day_start(now, timezone)
    if session.scalar(SQL["aggregation_pending"], {"day_start": since}):
        return f"waiting for the day's listening.aggregate (none finished since {since})"
    return None
