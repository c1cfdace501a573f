"""Enrichment runs, driven directly against the Spotify stand-in with the real spotipy client.

No queue here: ``enrich(session, catalog, clock, ...)`` is called as the task calls it, so
each behaviour of a run is pinned without a worker (tests/test_enrichment_worker.py covers
the wiring, the shared limit across worker processes and the upload trigger).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Listen, SpotifyMatch, SpotifyToken
from standins.spotify import SpotifyStandIn
from tasks.enrichment import spotify as spotify_api
from tasks.enrichment.accounts import spotipy_refresher
from tasks.enrichment.enrich import Accounts, EnrichmentReport, _Run, enrich
from tasks.enrichment.spotify import APP_TOKEN_KEY, SpotifyCatalog
from tests.enrichment_support import (
    NOW,
    add_listens,
    add_song,
    cipher,
    connected_user,
    new_user,
    spotify_settings,
    upload,
)
from worker.settings import Settings

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent


@pytest.fixture
def standin() -> Iterator[SpotifyStandIn]:
    with SpotifyStandIn() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_spotify_state(redis_client: redis.Redis) -> Iterator[None]:
    """No shared token, limit log, pause or batch-endpoint memory left by another test."""

    def clear() -> None:
        for key in redis_client.scan_iter("ratelimit:spotify*"):
            redis_client.delete(key)
        redis_client.delete(APP_TOKEN_KEY)
        spotify_api._removed_batch_endpoints.clear()

    clear()
    yield
    clear()


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Runner:
    """Runs enrichment as the task does, with a clock and sleeps the test controls."""

    def __init__(self, session: Session, settings: Settings, client: redis.Redis) -> None:
        self.session = session
        self.settings = settings
        self.client = client
        self.clock = Clock()
        self.sleeps: list[float] = []
        self.really_sleep = False  # backoffs are only recorded, unless a test needs time

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.really_sleep:
            time.sleep(seconds)

    def catalog(self) -> SpotifyCatalog:
        return SpotifyCatalog(self.settings, self.client, sleep=self.sleep)

    def __call__(self, *, upload_id: int | None = None, batch_size: int = 500) -> EnrichmentReport:
        self.session.commit()
        return enrich(
            self.session,
            self.catalog(),
            self.clock,
            self.settings,
            accounts=Accounts(cipher, spotipy_refresher(self.settings)),
            upload_id=upload_id,
            batch_size=batch_size,
            budget_seconds=600,
            lease_seconds=900,
        )


@pytest.fixture
def run(session: Session, standin: SpotifyStandIn, redis_client: redis.Redis) -> Runner:
    return Runner(session, spotify_settings(standin), redis_client)


def alice_listened_to_one_song(session: Session, standin: SpotifyStandIn) -> int:
    """Spotify has ("Band", "Song"); Alice, connected, listened to it once."""
    add_song(standin, "Band", "Song")
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [("Band", "Song")])
    return alice


def statuses(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Listen.enrichment_status, text("count(*)")).group_by(Listen.enrichment_status)
    )
    return {status: count for status, count in rows}


# -- requests: each song searched once, batches full --------------------------------------


def test_a_thousand_listens_of_ten_songs_cost_ten_searches(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    songs = [add_song(standin, f"Band {i}", f"Song {i}") for i in range(10)]
    alice = connected_user(session, standin, "alice-refresh")
    bob = connected_user(session, standin, "bob-refresh")
    add_listens(session, alice, [(s.artist, s.title) for s in songs] * 60)
    add_listens(session, bob, [(s.artist, s.title) for s in songs] * 40)

    report = run()

    assert standin.count("/v1/search") == 10
    assert report.listens_enriched == 1000
    assert statuses(session) == {"matched": 1000}
    assert standin.count("/v1/artists") == 1  # ten artists' genres: one batch
    assert standin.count("/v1/artists/") == 0


def test_known_ids_are_fetched_fifty_to_a_batch_call(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    songs = [add_song(standin, f"Artist {i % 60}", f"Tune {i}") for i in range(120)]
    alice = connected_user(session, standin, "alice-refresh")
    for song in songs:
        add_listens(session, alice, [(song.artist, song.title)], spotify_track_id=song.track_id)

    run()

    assert standin.count("/v1/search") == 0
    assert standin.count("/v1/tracks") == math.ceil(120 / 50)
    assert standin.count("/v1/artists") == math.ceil(60 / 50)
    assert statuses(session) == {"matched": 120}


def test_noisy_spellings_of_one_song_share_one_search(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Velvet Harbor", "Northern Lights")
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(
        session,
        alice,
        [
            ("Velvet Harbor", "Northern Lights"),
            ("velvet harbor", "northern lights"),
            ("VELVET HARBOR", "Northern Lights - Remastered 2011"),
            ("Velvet Harbor feat. Someone", "Northern Lights (feat. Someone Else)"),
        ],
    )

    run()

    assert standin.count("/v1/search") == 1
    assert statuses(session) == {"matched": 4}


def test_a_matched_listen_carries_the_tracks_metadata(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    song = add_song(standin, "Velvet Harbor", "Northern Lights", isrc="GBXYZ1900001")
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [("Velvet Harbor", "Northern Lights")])

    run()

    listen = session.scalars(select(Listen)).one()
    assert listen.enrichment_status == "matched"
    assert listen.spotify_track_id == song.track_id
    assert listen.spotify_artist_ids == [song.artist_id]
    assert listen.spotify_album_id is not None
    assert listen.duration_ms == 201_000
    assert listen.popularity == 50
    assert listen.isrc == "GBXYZ1900001"
    assert listen.release_date == dt.date(2019, 5, 17)
    assert listen.enriched_at == NOW
    assert listen.enrichment_attempts == 1
    assert listen.enrichment_error is None


def test_a_rerun_changes_nothing(session: Session, standin: SpotifyStandIn, run: Runner) -> None:
    songs = [add_song(standin, f"Band {i}", f"Song {i}") for i in range(3)]
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [(s.artist, s.title) for s in songs] * 2)
    add_listens(session, alice, [("Nobody", "Unknown Song")])
    run()
    before = session.execute(text("SELECT id, xmin::text FROM listens ORDER BY id")).all()
    requests_before = len(standin.recorded("/v1/"))

    run.clock.now = NOW + dt.timedelta(hours=1)
    report = run()

    assert report.listens_enriched == 0
    assert report.keys_asked == 0
    assert len(standin.recorded("/v1/")) == requests_before
    # Not one listen row was rewritten: same row versions.
    assert session.execute(text("SELECT id, xmin::text FROM listens ORDER BY id")).all() == before


def test_a_song_spotify_lacks_is_asked_again_only_after_the_retry_time(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [("Nobody", "Unknown Song")])
    run()
    listen = session.scalars(select(Listen)).one()
    assert listen.enrichment_status == "not_found"

    run.clock.now = NOW + dt.timedelta(hours=13 * 24)
    run()
    assert standin.count("/v1/search") == 1

    add_song(standin, "Nobody", "Unknown Song")  # released since
    run.clock.now = NOW + dt.timedelta(hours=14 * 24 + 1)
    run()
    assert standin.count("/v1/search") == 2
    session.refresh(listen)
    assert listen.enrichment_status == "matched"
    assert listen.enrichment_attempts == 2


def test_a_listen_without_names_fails_without_a_request(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [("  ", "Song"), ("Band", "")])

    run()

    assert standin.count("/v1/") == 0
    errors = session.scalars(select(Listen.enrichment_error)).all()
    assert errors == ["no artist or track name to search for"] * 2
    assert statuses(session) == {"failed": 2}


# -- dev-mode apps: no batch endpoints, no popularity --------------------------------------


def test_removed_batch_endpoints_fall_back_to_single_calls_once_per_process(
    session: Session, run: Runner
) -> None:
    with SpotifyStandIn(batch_endpoints=False, popularity=False) as devmode:
        run.settings = spotify_settings(devmode)
        songs = [add_song(devmode, f"Artist {i}", f"Tune {i}") for i in range(3)]
        alice = connected_user(session, devmode, "alice-refresh")
        for song in songs:
            add_listens(session, alice, [(song.artist, song.title)], spotify_track_id=song.track_id)

        run()

        assert devmode.count("/v1/tracks") == 1 + 3  # one 403, then one call per track
        assert devmode.count("/v1/artists") == 1 + 3
        assert statuses(session) == {"matched": 3}
        assert session.scalars(select(Listen.popularity)).all() == [None] * 3

        more = add_song(devmode, "Artist 9", "Tune 9")
        add_listens(session, alice, [(more.artist, more.title)], spotify_track_id=more.track_id)
        devmode.reset_log()
        run()
        # Remembered: straight to the single-item call.
        assert [r.path for r in devmode.recorded("/v1/tracks")] == [f"/v1/tracks/{more.track_id}"]


# -- consent: connections, tokens -----------------------------------------------------------


def test_a_revoked_users_listens_are_skipped(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Band", "Shared Song")
    add_song(standin, "Band", "Only Bob Plays This")
    alice = connected_user(session, standin, "alice-refresh")
    bob = connected_user(session, standin, "bob-refresh")
    add_listens(session, alice, [("Band", "Shared Song")])
    add_listens(session, bob, [("Band", "Shared Song"), ("Band", "Only Bob Plays This")])
    session.execute(
        text("UPDATE spotify_tokens SET revoked_at = now() WHERE user_id = :u"), {"u": bob}
    )

    run()

    assert standin.count("/v1/search") == 1  # nothing is asked for Bob alone
    bobs = session.scalars(select(Listen.enrichment_status).where(Listen.user_id == bob)).all()
    assert bobs == ["pending", "pending"]


def test_a_user_without_a_connection_is_not_enriched(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Band", "Song")
    stranger = new_user(session)
    add_listens(session, stranger, [("Band", "Song")])

    run()

    assert standin.count("/v1/") == 0
    assert statuses(session) == {"pending": 1}


def test_an_expired_user_token_is_refreshed(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Band", "Song")
    alice = connected_user(
        session,
        standin,
        "alice-refresh",
        access_token="old",
        expires_in=3600,
        now=NOW - dt.timedelta(hours=2),
    )
    add_listens(session, alice, [("Band", "Song")])

    report = run()

    assert report.users_refreshed == 1
    refreshes = [r for r in standin.recorded("/api/token") if r.status == 200]
    assert len(refreshes) == 2  # the app's token, and Alice's refresh
    token = session.get(SpotifyToken, alice)
    assert token is not None
    session.refresh(token)
    assert token.access_token_expires_at == NOW + dt.timedelta(hours=1)
    assert token.access_token_encrypted is not None
    assert cipher().decrypt(token.access_token_encrypted) != "old"
    assert statuses(session) == {"matched": 1}


def test_invalid_grant_revokes_the_connection_and_stops_its_work(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    alice = alice_listened_to_one_song(session, standin)
    standin.revoke_refresh_token("alice-refresh")

    report = run()

    assert report.users_revoked == 1
    token = session.get(SpotifyToken, alice)
    assert token is not None
    session.refresh(token)
    assert token.revoked_at == NOW
    assert token.revoked_reason is not None and token.revoked_reason.startswith("invalid_grant")
    assert token.refresh_token_encrypted is None
    assert standin.count("/v1/") == 0
    assert statuses(session) == {"pending": 1}

    standin.reset_log()
    run()
    assert standin.recorded() == []  # no retry of a refused grant


def test_an_expired_app_token_is_renewed_and_the_request_retried(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Band", "Song One")
    add_song(standin, "Band", "Song Two")
    alice = connected_user(session, standin, "alice-refresh", access_token="a", expires_in=3600)
    add_listens(session, alice, [("Band", "Song One")])
    run()
    standin.expire_access_tokens()
    add_listens(session, alice, [("Band", "Song Two")])
    standin.reset_log()

    run()

    answers = [(r.path, r.status) for r in standin.recorded()]
    assert answers[:3] == [("/v1/search", 401), ("/api/token", 200), ("/v1/search", 200)]
    assert statuses(session) == {"matched": 2}


def test_the_shared_app_token_is_sealed_in_redis_and_expires_with_the_token(
    standin: SpotifyStandIn, run: Runner, redis_client: redis.Redis
) -> None:
    add_song(standin, "Band", "Song")

    run.catalog().search_tracks("track:Song artist:Band")

    (sent,) = {r.token for r in standin.recorded("/v1/search")}
    assert sent is not None
    stored = redis_client.get(APP_TOKEN_KEY)
    assert stored is not None and sent.encode() not in stored
    assert 3500 < redis_client.ttl(APP_TOKEN_KEY) <= 3600


def test_a_sealed_app_token_is_shared_by_the_next_client(
    standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Band", "Song")
    run.catalog().search_tracks("track:Song artist:Band")

    run.catalog().search_tracks("track:Song artist:Band")

    assert len(standin.recorded("/api/token")) == 1
    assert len({r.token for r in standin.recorded("/v1/search")}) == 1


def test_an_app_token_sealed_under_another_secret_is_fetched_again(
    standin: SpotifyStandIn, run: Runner, redis_client: redis.Redis
) -> None:
    add_song(standin, "Band", "Song")
    redis_client.set(APP_TOKEN_KEY, b"sealed under a secret since replaced")

    run.catalog().search_tracks("track:Song artist:Band")

    assert [r.status for r in standin.recorded("/api/token")] == [200]


# -- errors: 429, 5xx ------------------------------------------------------------------------


def test_a_429_pauses_every_worker_until_retry_after(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    for i in range(3):
        add_song(standin, "Band", f"Song {i}")
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [("Band", f"Song {i}") for i in range(3)])
    standin.rate_limit_next(3600, reason="QUOTA_EXCEEDED")

    report = run()

    assert report.status == "paused"
    assert report.resume_in is not None and 3590 < report.resume_in <= 3600
    assert standin.count("/v1/search") == 1  # the 429, and nothing after it
    assert run.sleeps == []  # no worker slot held waiting
    pause = run.catalog().limiter.paused()
    assert pause is not None and pause.reason == "429 QUOTA_EXCEEDED"
    # The songs were not at fault: unanswered, unclaimed, ready for the next run.
    keys = session.scalars(select(SpotifyMatch)).all()
    assert [(k.status, k.attempts, k.claimed_until) for k in keys] == [("pending", 0, None)] * 3
    # Another worker's run stops before sending anything.
    again = run()
    assert again.status == "paused"
    assert standin.count("/v1/search") == 1


def test_a_short_retry_after_is_waited_out_inline(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    alice_listened_to_one_song(session, standin)
    standin.rate_limit_next(1)
    run.really_sleep = True

    report = run()

    assert report.status == "done"
    assert len(run.sleeps) >= 1 and 0 < sum(run.sleeps) <= 1.0
    assert statuses(session) == {"matched": 1}


def test_a_5xx_is_retried_with_backoff(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    alice_listened_to_one_song(session, standin)
    standin.fail_next("/v1/search", 503, times=2)

    report = run()

    assert [r.status for r in standin.recorded("/v1/search")] == [503, 503, 200]
    assert report.requests["retried"] == 2
    assert len(run.sleeps) == 2 and run.sleeps[0] <= 0.5 and run.sleeps[1] <= 1.0
    assert statuses(session) == {"matched": 1}


def test_a_song_that_keeps_failing_is_recorded_and_retried_later_up_to_a_limit(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    alice_listened_to_one_song(session, standin)
    standin.fail_next("/v1/search", 502, times=4)

    run()

    listen = session.scalars(select(Listen)).one()
    assert listen.enrichment_status == "failed"
    assert listen.enrichment_attempts == 1
    assert listen.enrichment_error is not None and "HTTP 502" in listen.enrichment_error
    key = session.scalars(select(SpotifyMatch)).one()
    assert key.retry_at is not None
    assert NOW + dt.timedelta(minutes=5) <= key.retry_at <= NOW + dt.timedelta(minutes=10)

    run.clock.now = key.retry_at + dt.timedelta(seconds=1)
    run()
    session.refresh(listen)
    assert listen.enrichment_status == "matched"
    assert listen.enrichment_attempts == 2


def test_after_the_last_attempt_a_failing_song_is_not_asked_again(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    run.settings = run.settings.model_copy(update={"spotify_max_attempts": 1})
    alice_listened_to_one_song(session, standin)
    standin.fail_next("/v1/search", 500, times=4)
    run()

    run.clock.now = NOW + dt.timedelta(days=30)
    standin.reset_log()
    run()

    assert standin.count("/v1/search") == 0
    assert session.scalars(select(SpotifyMatch.retry_at)).one() is None


def test_an_upload_run_asks_only_about_that_uploads_songs(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Band", "In The Upload")
    add_song(standin, "Band", "Elsewhere")
    alice = connected_user(session, standin, "alice-refresh")
    upload_id = upload(session, alice)
    add_listens(session, alice, [("Band", "In The Upload")], upload_id=upload_id)
    add_listens(session, alice, [("Band", "Elsewhere")])

    report = run(upload_id=upload_id)

    assert report.keys_asked == 1
    assert [r.query["q"] for r in standin.recorded("/v1/search")] == [
        'track:"In The Upload" artist:"Band"'
    ]


def test_a_batch_size_ends_the_run_with_more_to_do(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    for i in range(5):
        add_song(standin, "Band", f"Song {i}")
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [("Band", f"Song {i}") for i in range(5)])

    first = run(batch_size=3)
    second = run(batch_size=3)

    assert (first.status, first.keys_asked) == ("more", 3)
    assert (second.status, second.keys_asked) == ("done", 2)
    assert statuses(session) == {"matched": 5}


# -- genres ------------------------------------------------------------------------------------


def test_spotify_genres_fill_catalogue_artists_and_queue_genre_classification(
    session: Session, standin: SpotifyStandIn, run: Runner
) -> None:
    add_song(standin, "Velvet Harbor", "Northern Lights", genres=("dream pop", "shoegaze"))
    catalogue_artist = session.execute(
        text("INSERT INTO artists (name) VALUES ('Velvet Harbor') RETURNING id")
    ).scalar_one()
    track_id = session.execute(
        text("INSERT INTO tracks (title, artist_id) VALUES ('Northern Lights', :a) RETURNING id"),
        {"a": catalogue_artist},
    ).scalar_one()
    alice = connected_user(session, standin, "alice-refresh")
    add_listens(session, alice, [("Velvet Harbor", "Northern Lights")])
    # Inserting the track queued a classification; it ran and found no evidence.
    session.execute(text("UPDATE background_tasks SET status = 'completed'"))

    report = run()

    genres = session.execute(
        text("SELECT genres FROM artists WHERE id = :a"), {"a": catalogue_artist}
    ).scalar_one()
    assert genres == ["dream pop", "shoegaze"]
    assert report.genre_tasks_queued == 1
    queued = session.execute(
        text("SELECT task_type, track_id FROM background_tasks WHERE status = 'pending'")
    ).all()
    assert queued == [("genre_classification", track_id)]


class HeldCatalog:
    """A catalog whose searches wait until the test lets them through."""

    def __init__(self, inner: SpotifyCatalog) -> None:
        self.inner = inner
        self.counts = inner.counts
        self.asking = threading.Event()
        self.go = threading.Event()

    def search_tracks(self, query: str) -> list[dict[str, Any]]:
        self.asking.set()
        self.go.wait(10)
        return self.inner.search_tracks(query)

    def tracks(self, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return self.inner.tracks(ids)

    def artists(self, ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return self.inner.artists(ids)


@pytest.mark.committed
def test_a_listen_registered_while_its_song_is_being_answered_gets_the_answer(
    session: Session, standin: SpotifyStandIn, run: Runner, engine: Any
) -> None:
    alice_listened_to_one_song(session, standin)
    bob = connected_user(session, standin, "bob-refresh")
    session.commit()
    held = HeldCatalog(run.catalog())
    reports: list[EnrichmentReport] = []

    def answering_run() -> None:
        with Session(engine) as own:
            reports.append(
                enrich(
                    own,
                    held,
                    run.clock,
                    run.settings,
                    accounts=None,
                    batch_size=10,
                    budget_seconds=60,
                    lease_seconds=900,
                )
            )

    answering = threading.Thread(target=answering_run)
    answering.start()
    assert held.asking.wait(10)  # Alice's song is claimed, its search under way
    # Another run registers Bob's listen of the same song and has not committed yet.
    add_listens(session, bob, [("Band", "Song")])
    session.commit()
    with Session(engine) as registering:
        deadline = run.clock() + dt.timedelta(minutes=1)
        other = _Run(registering, held, run.clock, run.settings, None, 10, 900, deadline)
        other._register(other._unregistered())
        held.go.set()
        time.sleep(0.5)  # the answering run writes its answer now, or waits for this one
        registering.commit()
    answering.join(20)

    assert reports and reports[0].status == "done"
    assert statuses(session) == {"matched": 2}
