"""One enrichment run: listens matched to Spotify through the shared answer cache.

A run works in short transactions, because it spends most of its time waiting on
Spotify and the rate limit, and an open transaction would hold back every other job's
snapshot (and the listening aggregation's watermark) meanwhile:

1. **Verify** the connections of users with listens to enrich whose access token has
   expired: refreshed, or revoked on ``invalid_grant`` (``tasks.enrichment.accounts``).
2. **Register** listens of live connections, a chunk at a time whenever the keys already
   registered are all asked about: each gets its cache key (``tasks.enrichment.matching``: the
   normalized artist and title; or the Spotify id its export carried). A key already
   answered serves the listen at once, with no request.
3. **Ask** about claimed keys, a chunk at a time: known ids by ``/tracks`` in batches of
   50, the rest by one search each. The match rule picks the answer. Answers are recorded
   on the key and copied onto every listen of a live connection that points at it.
4. **Artists** named by matched tracks are fetched in batches of 50 (a partial batch only
   when the run has nothing else left), and their genres fill catalogue artists that have
   none, queueing genre classification for those artists' tracks.

The run stops when nothing is left (``done``), when it has asked about ``batch_size``
keys or used its time budget (``more``: the task continues at once), or when Spotify
wants a long wait (``paused``: the task continues when the pause ends).

Keys are claimed with a lease, so concurrent runs (the hourly chain and upload runs) never
ask about the same song, and a killed run's keys come back after the lease. Registering
share-locks its keys and answering locks them, both in id order, so a listen registered
while its song is being answered is never left behind (see ``key_ids`` in
enrichment.sql beside this module).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sqlalchemy import Row
from sqlalchemy.orm import Session

from db.queries import execute_counted, queries
from tasks.enrichment.accounts import Refresher, refresh_expired
from tasks.enrichment.matching import Candidate, SearchKey, choose_match, search_key, search_query
from tasks.enrichment.spotify import (
    BATCH_SIZE,
    RequestCounts,
    SpotifyPausedError,
    SpotifyRejectedError,
    SpotifyUnavailableError,
)
from worker.secrets import SecretCipher
from worker.settings import Settings

log = logging.getLogger(__name__)

SQL = queries("tasks.enrichment", "enrichment")
JSON = dict[str, Any]
Clock = Callable[[], dt.datetime]

REGISTER_CHUNK = 5_000
SEARCH_CHUNK = 25  # keys claimed at a time for searching: answers land every few seconds
LOOKUP_CHUNK = BATCH_SIZE["tracks"]
ARTIST_CHUNK = BATCH_SIZE["artists"]
# After this many keys in a row fail (5xx, network), Spotify is down: stop asking.
FAILURES_TO_STOP = 3
FAILURE_BACKOFF = dt.timedelta(minutes=10)
FAILURE_BACKOFF_CAP = dt.timedelta(days=1)
SEARCH_PREFIX = "s:"
ID_PREFIX = "id:"
UNSEARCHABLE = "no artist or track name to search for"
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


class Catalog(Protocol):
    """What a run needs of Spotify (``tasks.enrichment.spotify.SpotifyCatalog``)."""

    counts: RequestCounts

    def search_tracks(self, query: str) -> list[JSON]: ...
    def tracks(self, ids: Sequence[str]) -> dict[str, JSON | None]: ...
    def artists(self, ids: Sequence[str]) -> dict[str, JSON | None]: ...


@dataclass(frozen=True)
class Accounts:
    """How a run verifies connections: the key to read tokens and how to refresh one."""

    cipher_factory: Callable[[], SecretCipher]
    refresher: Refresher


@dataclass
class EnrichmentReport:
    status: str = "done"  # done | more | paused
    reason: str | None = None
    resume_in: float | None = None  # seconds until the next run may ask Spotify
    users_refreshed: int = 0
    users_revoked: int = 0
    listens_registered: int = 0
    listens_enriched: int = 0
    keys_asked: int = 0
    matched: int = 0
    not_found: int = 0
    failed: int = 0
    artists_fetched: int = 0
    genre_tasks_queued: int = 0
    requests: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    key_id: int
    status: str  # matched | not_found | failed
    spotify_track_id: str | None
    score: float | None
    attempts: int
    last_error: str | None
    retry_at: dt.datetime | None

    def as_json(self) -> JSON:
        return {
            "id": self.key_id,
            "status": self.status,
            "spotify_track_id": self.spotify_track_id,
            "score": self.score,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
        }


class _StopAskingError(Exception):
    """End the asking phase: the report already says why."""


def enrich(
    session: Session,
    catalog: Catalog,
    clock: Clock,
    settings: Settings,
    *,
    accounts: Accounts | None,
    upload_id: int | None = None,
    batch_size: int,
    budget_seconds: float,
    lease_seconds: float,
) -> EnrichmentReport:
    """Enrich what is waiting (of one upload, if named); commits as it goes."""
    deadline = clock() + dt.timedelta(seconds=budget_seconds)
    run = _Run(session, catalog, clock, settings, upload_id, batch_size, lease_seconds, deadline)
    if accounts is not None:
        run.verify(accounts)
    with contextlib.suppress(_StopAskingError):
        run.ask()
    # A partial batch only when the whole backlog is through: upload runs end often, and
    # each flushing its few artists would multiply the artist calls.
    run.fetch_artists(partial=run.report.status == "done" and upload_id is None)
    run.report.requests = asdict(catalog.counts)
    return run.report


class _Run:
    def __init__(
        self,
        session: Session,
        catalog: Catalog,
        clock: Clock,
        settings: Settings,
        upload_id: int | None,
        batch_size: int,
        lease_seconds: float,
        deadline: dt.datetime,
    ) -> None:
        self.session = session
        self.catalog = catalog
        self.clock = clock
        self.settings = settings
        self.upload_id = upload_id
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.deadline = deadline
        self.report = EnrichmentReport()
        self.failures_in_a_row = 0

    # -- 1. connections ------------------------------------------------------------------

    def verify(self, accounts: Accounts) -> None:
        now = self.clock()
        due = now + dt.timedelta(seconds=60)
        user_ids = list(
            self.session.scalars(SQL["users_to_verify"], {"due": due, "upload_id": self.upload_id})
        )
        if not user_ids:
            return
        refreshed = refresh_expired(
            self.session, accounts.cipher_factory(), accounts.refresher, user_ids, now
        )
        self.session.commit()
        self.report.users_refreshed = len(refreshed.refreshed)
        self.report.users_revoked = len(refreshed.revoked)

    # -- 2. registration -------------------------------------------------------------------

    def register_chunk(self) -> bool:
        """Register one chunk of listens; False when none were left after it."""
        rows = self._unregistered()
        if rows:
            self._register(rows)
            self.session.commit()
        return len(rows) == REGISTER_CHUNK

    def _unregistered(self) -> Sequence[Row[Any]]:
        if self.upload_id is None:
            return self.session.execute(
                SQL["unregistered_listens"], {"limit": REGISTER_CHUNK}
            ).all()
        return self.session.execute(
            SQL["unregistered_upload_listens"],
            {"limit": REGISTER_CHUNK, "upload_id": self.upload_id},
        ).all()

    def _register(self, rows: Sequence[Row[Any]]) -> None:
        keys: dict[str, tuple[str | None, str | None]] = {}
        listen_keys: list[tuple[int, str]] = []
        unsearchable: list[int] = []
        for row in rows:
            if row.spotify_track_id:
                key, query = ID_PREFIX + row.spotify_track_id, None
            else:
                found = search_key(row.artist_name, row.track_name)
                if found is None:
                    unsearchable.append(row.id)
                    continue
                key = SEARCH_PREFIX + found.text
                query = search_query(row.artist_name, row.track_name)
            keys.setdefault(key, (query, row.spotify_track_id or None))
            listen_keys.append((row.id, key))
        now = self.clock()
        if unsearchable:
            self.session.execute(
                SQL["fail_unsearchable"], {"ids": unsearchable, "error": UNSEARCHABLE, "now": now}
            )
        if not keys:
            return
        # Sorted: concurrent runs inserting the same new keys then wait on each other in
        # one order, never in a cycle.
        names = sorted(keys)
        self.session.execute(
            SQL["insert_keys"],
            {
                "keys": names,
                "queries": [keys[k][0] for k in names],
                "track_ids": [keys[k][1] for k in names],
            },
        )
        ids: dict[str, int] = {}
        answered: list[int] = []
        for key, key_id, status in self.session.execute(SQL["key_ids"], {"keys": names}):
            ids[key] = key_id
            if status != "pending":
                answered.append(key_id)
        self.report.listens_registered += execute_counted(
            self.session,
            SQL["assign_keys"],
            {
                "listen_ids": [listen_id for listen_id, _ in listen_keys],
                "match_ids": [ids[key] for _, key in listen_keys],
            },
        )
        self._apply(answered, pending_only=True)

    # -- 3. asking Spotify --------------------------------------------------------------------

    def ask(self) -> None:
        """Ask about keys as they are registered: a chunk of listens, then its new keys.

        Registering the whole backlog first would leave the rate budget unused meanwhile.
        """
        unregistered_left = self.register_chunk()
        while True:
            if self.clock() >= self.deadline or self.report.keys_asked >= self.batch_size:
                self._stop("more", "batch done: continuing")
            room = self.batch_size - self.report.keys_asked
            claimed = self._claim(lookups=True, limit=min(LOOKUP_CHUNK, room))
            if claimed:
                self._look_up(claimed)
                continue
            claimed = self._claim(lookups=False, limit=min(SEARCH_CHUNK, room))
            if claimed:
                self._search(claimed)
                self.fetch_artists(partial=False)
            elif unregistered_left:
                unregistered_left = self.register_chunk()
            else:
                return

    def _claim(self, *, lookups: bool, limit: int) -> list[Row[Any]]:
        rows = self.session.execute(
            SQL["claim_keys"],
            {
                "now": self.clock(),
                "lease_seconds": self.lease_seconds,
                "lookups": lookups,
                "upload_id": self.upload_id,
                "limit": limit,
            },
        ).all()
        self.session.commit()  # the claim must be visible to other runs before we ask
        return list(rows)

    def _look_up(self, claimed: list[Row[Any]]) -> None:
        ids = [row.spotify_track_id for row in claimed]
        try:
            found = self.catalog.tracks(ids)
        except (SpotifyPausedError, SpotifyUnavailableError, SpotifyRejectedError) as exc:
            self._record([], [], failed=claimed, error=exc)
            return
        items = [item for item in found.values() if item]
        answers = [
            self._answer(row, "matched", row.spotify_track_id, 1.0)
            if found.get(row.spotify_track_id)
            else self._answer(row, "not_found", row.spotify_track_id, None)
            for row in claimed
        ]
        self._record(answers, [], items=items)

    def _search(self, claimed: list[Row[Any]]) -> None:
        answers: list[Answer] = []
        items: list[JSON] = []
        for position, row in enumerate(claimed):
            try:
                candidates = self.catalog.search_tracks(row.query)
            except (SpotifyPausedError, SpotifyUnavailableError, SpotifyRejectedError) as exc:
                self._record(answers, claimed[position + 1 :], failed=[row], error=exc, items=items)
                return
            self.failures_in_a_row = 0
            match = choose_match(
                _search_key(row.key), _candidates(candidates), self.settings.spotify_match_threshold
            )
            if match is None:
                answers.append(self._answer(row, "not_found", None, None))
                continue
            items.append(next(c for c in candidates if c.get("id") == match.candidate.id))
            answers.append(self._answer(row, "matched", match.candidate.id, match.score))
        self._record(answers, [], items=items)

    def _record(
        self,
        answers: list[Answer],
        unasked: Sequence[Row[Any]],
        *,
        failed: Sequence[Row[Any]] = (),
        error: Exception | None = None,
        items: Iterable[JSON] = (),
    ) -> None:
        """Write answers and failures, release keys not asked, then stop if told to."""
        stop: tuple[str, str, float | None] | None = None
        if isinstance(error, SpotifyPausedError):
            # Not the key's fault: it goes back unanswered, with the rest.
            unasked = [*failed, *unasked]
            stop = ("paused", str(error), error.wait.seconds)
        elif error is not None:
            answers = answers + [self._failure(row, error) for row in failed]
            self.failures_in_a_row += 1
            if (
                isinstance(error, SpotifyUnavailableError)
                and self.failures_in_a_row >= FAILURES_TO_STOP
            ):
                stop = ("paused", f"Spotify unavailable: {error}", FAILURE_BACKOFF.total_seconds())
        now = self.clock()
        # Lock the keys in id order before writing them, as registration does (FOR SHARE,
        # id order): a registering run either sees these answers or is seen by _apply.
        self.session.execute(
            SQL["lock_keys"], {"ids": [a.key_id for a in answers] + [r.id for r in unasked]}
        )
        tracks = [_track_row(item) for item in items]
        if tracks:
            self.session.execute(SQL["record_tracks"], {"tracks": json.dumps(tracks), "now": now})
            artists = {a["id"]: a["name"] for item in items for a in item.get("artists") or []}
            self.session.execute(
                SQL["record_artist_names"],
                {"artists": json.dumps([{"id": i, "name": n} for i, n in artists.items()])},
            )
        if answers:
            self.session.execute(
                SQL["resolve_keys"],
                {"answers": json.dumps([a.as_json() for a in answers]), "now": now},
            )
        if unasked:
            self.session.execute(SQL["release_keys"], {"ids": [row.id for row in unasked]})
        self._apply([a.key_id for a in answers], pending_only=False)
        self.session.commit()
        self.report.keys_asked += len(answers)
        for answer in answers:
            setattr(self.report, answer.status, getattr(self.report, answer.status) + 1)
        if stop is not None:
            self._stop(*stop)

    def _answer(
        self, row: Row[Any], status: str, track_id: str | None, score: float | None
    ) -> Answer:
        retry_at = None
        if status == "not_found":
            retry_at = self.clock() + dt.timedelta(
                hours=self.settings.spotify_retry_not_found_after_hours
            )
        return Answer(row.id, status, track_id, score, row.attempts + 1, None, retry_at)

    def _failure(self, row: Row[Any], error: Exception) -> Answer:
        attempts = row.attempts + 1
        retry_at = None
        if (
            isinstance(error, SpotifyUnavailableError)
            and attempts < self.settings.spotify_max_attempts
        ):
            backoff = min(FAILURE_BACKOFF * 2 ** (attempts - 1), FAILURE_BACKOFF_CAP)
            # Jitter, so keys that failed together in an outage do not return together.
            retry_at = self.clock() + backoff * random.uniform(0.5, 1.0)
        message = f"{type(error).__name__}: {error}"[:500]
        return Answer(row.id, "failed", row.spotify_track_id, None, attempts, message, retry_at)

    def _apply(self, key_ids: list[int], *, pending_only: bool) -> None:
        if key_ids:
            self.report.listens_enriched += execute_counted(
                self.session,
                SQL["apply_answers"],
                {"match_ids": key_ids, "pending_only": pending_only, "now": self.clock()},
            )

    def _stop(self, status: str, reason: str, resume_in: float | None = None) -> None:
        self.report.status, self.report.reason, self.report.resume_in = status, reason, resume_in
        raise _StopAskingError

    # -- 4. artists and genres ---------------------------------------------------------------

    def fetch_artists(self, *, partial: bool) -> None:
        """Fetch artists waiting for their genres, in full batches unless ``partial``."""
        while self.report.status != "paused":
            now = self.clock()
            waiting = self.session.scalar(SQL["count_unfetched_artists"], {"now": now}) or 0
            if waiting == 0 or (waiting < ARTIST_CHUNK and not partial):
                self.session.commit()
                return
            ids = list(
                self.session.scalars(
                    SQL["claim_artists"],
                    {"now": now, "lease_seconds": self.lease_seconds, "limit": ARTIST_CHUNK},
                )
            )
            self.session.commit()
            if not ids:
                return
            try:
                found = self.catalog.artists(ids)
            except (SpotifyPausedError, SpotifyUnavailableError, SpotifyRejectedError) as exc:
                self.session.execute(SQL["release_artists"], {"ids": ids})
                self.session.commit()
                log.warning("artist genres deferred: %s", exc)
                return
            self._record_artists(ids, found)

    def _record_artists(self, ids: list[str], found: dict[str, JSON | None]) -> None:
        rows = []
        for artist_id in ids:
            artist = found.get(artist_id) or {}  # gone from the catalogue: no genres
            rows.append(
                {
                    "id": artist_id,
                    "name": artist.get("name"),
                    "genres": artist.get("genres") or [],
                    "popularity": artist.get("popularity"),
                }
            )
        now = self.clock()
        self.session.execute(SQL["record_artists"], {"artists": json.dumps(rows), "now": now})
        self.report.genre_tasks_queued += execute_counted(
            self.session, SQL["feed_genres"], {"ids": ids}
        )
        self.session.commit()
        self.report.artists_fetched += len(ids)


def _search_key(key: str) -> SearchKey:
    artist, _, track = key.removeprefix(SEARCH_PREFIX).partition("\x1f")
    return SearchKey(artist=artist, track=track)


def _candidates(items: list[JSON]) -> list[Candidate]:
    return [
        Candidate(
            id=item["id"],
            name=item.get("name") or "",
            artist_names=tuple(a.get("name") or "" for a in item.get("artists") or []),
        )
        for item in items
        if item and item.get("id")
    ]


def _track_row(item: JSON) -> JSON:
    album = item.get("album") or {}
    precision = album.get("release_date_precision")
    return {
        "id": item["id"],
        "name": item.get("name") or "",
        "artist_ids": [a["id"] for a in item.get("artists") or [] if a.get("id")],
        "album_id": album.get("id"),
        "duration_ms": item.get("duration_ms"),
        # Gone for development-mode apps since 2026: optional, NULL when absent.
        "popularity": item.get("popularity"),
        "isrc": (item.get("external_ids") or {}).get("isrc"),
        "release_date": release_date(album.get("release_date")),
        "release_date_precision": precision,
    }


def release_date(value: str | None) -> str | None:
    """Spotify's '1981', '1981-12' or '1981-12-15' as a date (first day of a year/month)."""
    if not value or not _DATE.match(value) or value.startswith("0000"):
        return None
    year, month, day = [*value.split("-"), "01", "01"][:3]
    try:
        return dt.date(int(year), int(month), int(day)).isoformat()
    except ValueError:
        return None
