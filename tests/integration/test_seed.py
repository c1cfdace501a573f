"""The synthetic data generator: shape and realism of what it loads, determinism, appending.

Self-contained: each database is created fresh on the server of TEST_DATABASE_URL and
dropped afterwards.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from db.migrate import upgrade
from db.seed import SeedReport, SeedSpec, seed_url

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent

SERVER_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NOW = datetime(2026, 3, 1, 18, tzinfo=UTC)
SPEC = SeedSpec(users=200, tracks=1000, plays=20_000, days=90, seed=7, now=NOW)
TABLES = ("artists", "albums", "tracks", "users", "play_history", "upload_jobs", "listens")


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def _fresh_database() -> Iterator[str]:
    """A new, migrated database on the test server; its SQLAlchemy URL."""
    name = f"seedtest_{uuid.uuid4().hex[:12]}"
    admin = _conninfo(str(make_url(SERVER_URL).set(database="postgres")))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(url: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(_conninfo(url)) as conn:
        return conn.execute(query, params).fetchall()


def _value(url: str, query: str, params: Any = ()) -> Any:
    return _rows(url, query, params)[0][0]


# Columns the database fills per installation, not from the seed.
NOT_FROM_THE_SEED = {"play_history": "ingest_xid"}


def _fingerprint(url: str) -> dict[str, str]:
    # Whole rows, ids included: two fresh databases hand out the same ids.
    return {
        table: _value(
            url,
            # Table names from TABLES, our own constant; the value is a bound parameter.
            f"SELECT md5(string_agg((to_jsonb(t) - %s)::text, E'\\n' ORDER BY t.id)) "  # noqa: S608
            f"FROM {table} t",
            (NOT_FROM_THE_SEED.get(table, ""),),
        )
        for table in TABLES
    }


def _counts(url: str) -> dict[str, int]:
    # Table names from TABLES, our own constant.
    return {table: _value(url, f"SELECT count(*) FROM {table}") for table in TABLES}  # noqa: S608


@pytest.fixture(scope="module")
def seed_db_url() -> Iterator[str]:
    with _fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def seeded(seed_db_url: str) -> tuple[str, SeedReport, list[tuple[str, int, int]]]:
    calls: list[tuple[str, int, int]] = []
    report = seed_url(seed_db_url, SPEC, lambda *call: calls.append(call))
    return seed_db_url, report, calls


def test_report_counts_match_the_tables(seeded: tuple[str, SeedReport, Any]) -> None:
    url, report, _ = seeded
    assert _counts(url) == {
        "artists": report.artists,
        "albums": report.albums,
        "tracks": SPEC.tracks,
        "users": SPEC.users,
        "play_history": SPEC.plays,
        "upload_jobs": report.uploads,
        "listens": SPEC.plays // 20,
    }


def test_progress_reaches_every_stage_total(seeded: tuple[str, SeedReport, Any]) -> None:
    _, _, calls = seeded
    final = {stage: (done, total) for stage, done, total in calls}
    assert set(final) == {"artists", "albums", "tracks", "users", "plays", "uploads", "listens"}
    assert all(done == total for done, total in final.values())


def test_same_spec_gives_identical_rows(seeded: tuple[str, SeedReport, Any]) -> None:
    url, _, _ = seeded
    with _fresh_database() as other:
        seed_url(other, SPEC)
        assert _fingerprint(other) == _fingerprint(url)


def test_plays_lie_within_the_window_before_now(seeded: tuple[str, SeedReport, Any]) -> None:
    url, _, _ = seeded
    first, last = _rows(url, "SELECT min(played_at), max(played_at) FROM play_history")[0]
    assert NOW - timedelta(days=SPEC.days) <= first
    assert last < NOW


def test_no_play_precedes_its_tracks_release(seeded: tuple[str, SeedReport, Any]) -> None:
    url, _, _ = seeded
    assert (
        _value(
            url,
            """
        SELECT count(*) FROM play_history p JOIN tracks t ON t.id = p.track_id
        WHERE p.played_at < t.release_date
    """,
        )
        == 0
    )


def test_track_popularity_is_skewed(seeded: tuple[str, SeedReport, Any]) -> None:
    url, _, _ = seeded
    counts = [
        n
        for (n,) in _rows(
            url,
            """
        SELECT count(p.id) FROM tracks t LEFT JOIN play_history p ON p.track_id = t.id
        GROUP BY t.id ORDER BY 1 DESC
    """,
        )
    ]
    top_share = sum(counts[: len(counts) // 100]) / sum(counts)
    assert top_share > 0.10
    assert counts[0] > 20 * counts[len(counts) // 2]


def test_popularity_column_follows_play_rank(seeded: tuple[str, SeedReport, Any]) -> None:
    url, _, _ = seeded
    top, bottom = _rows(
        url,
        """
        WITH c AS (SELECT t.popularity, count(p.id) n FROM tracks t
                   LEFT JOIN play_history p ON p.track_id = t.id GROUP BY t.id)
        SELECT avg(n) FILTER (WHERE popularity >= 70), avg(n) FILTER (WHERE popularity < 30)
        FROM c
    """,
    )[0]
    assert top > 10 * bottom


def test_user_activity_is_heavy_tailed(seeded: tuple[str, SeedReport, Any]) -> None:
    url, _, _ = seeded
    counts = [
        n
        for (n,) in _rows(
            url,
            """
        SELECT count(p.id) FROM users u LEFT JOIN play_history p ON p.user_id = u.id
        GROUP BY u.id ORDER BY 1 DESC
    """,
        )
    ]
    assert sum(counts[: len(counts) // 10]) / sum(counts) > 0.30


def test_users_mostly_play_their_favourite_genres(seeded: tuple[str, SeedReport, Any]) -> None:
    url, _, _ = seeded
    median_top, global_top = _rows(
        url,
        """
        WITH g AS (SELECT p.user_id, t.genre, count(*) n FROM play_history p
                   JOIN tracks t ON t.id = p.track_id GROUP BY 1, 2),
             u AS (SELECT max(n)::float / sum(n) top FROM g GROUP BY user_id
                   HAVING sum(n) >= 50),
             w AS (SELECT sum(n)::float / (SELECT sum(n) FROM g) share FROM g GROUP BY genre)
        SELECT (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY top) FROM u),
               (SELECT max(share) FROM w)
    """,
    )[0]
    # A typical active user's top genre: far above both uniform (1/16) and the global mix.
    assert median_top > 0.35
    assert median_top > 1.5 * global_top


def test_sessions_space_plays_by_how_long_the_previous_play_lasted(
    seeded: tuple[str, SeedReport, Any],
) -> None:
    url, _, _ = seeded
    pairs, back_to_back, overlapping, too_close = _rows(
        url,
        """
        WITH x AS (
            SELECT extract(epoch FROM p.played_at - lag(p.played_at) OVER w) * 1000 AS gap,
                   lag(p.ms_played) OVER w AS previous
            FROM play_history p
            WINDOW w AS (PARTITION BY p.user_id ORDER BY p.played_at, p.id))
        SELECT count(*), count(*) FILTER (WHERE abs(gap - previous) < 1),
               count(*) FILTER (WHERE gap < previous - 1),
               count(*) FILTER (WHERE gap > previous + 1 AND gap < previous + 20 * 60000)
        FROM x WHERE gap IS NOT NULL
    """,
    )[0]
    assert back_to_back > 0.8 * pairs  # sessions average about a dozen plays
    assert overlapping == 0  # one user, one track at a time
    assert too_close == 0  # otherwise sessions are at least 20 minutes apart


def test_some_albums_were_released_in_the_last_30_days(
    seeded: tuple[str, SeedReport, Any],
) -> None:
    url, _, _ = seeded
    recent = _value(
        url,
        "SELECT count(*) FROM albums WHERE release_date > %s",
        (NOW.date() - timedelta(days=30),),
    )
    assert recent > 0


def test_every_listen_belongs_to_a_completed_upload_of_its_user(
    seeded: tuple[str, SeedReport, Any],
) -> None:
    url, report, _ = seeded
    assert report.uploads > 0
    orphans = _value(
        url,
        """
        SELECT count(*) FROM listens l LEFT JOIN upload_jobs j ON j.id = l.upload_id
        WHERE j.id IS NULL OR j.user_id <> l.user_id OR j.status <> 'completed'
           OR j.completed_at IS NULL OR l.played_at >= j.created_at
           OR l.spotify_track_id IS NOT NULL OR l.enriched_at IS NOT NULL
    """,
    )
    assert orphans == 0


def test_listen_names_match_the_catalogue_after_normalisation(
    seeded: tuple[str, SeedReport, Any],
) -> None:
    url, _, _ = seeded
    artists = {name for (name,) in _rows(url, "SELECT name FROM artists")}
    lowered = {name.lower() for name in artists}
    titles = {title.lower() for (title,) in _rows(url, "SELECT title FROM tracks")}
    listens = _rows(url, "SELECT artist_name, track_name FROM listens")
    matched = sum(
        _normalise_artist(a) in lowered and _normalise_title(t) in titles for a, t in listens
    )
    assert matched > 0.95 * len(listens)
    assert sum(a in artists for a, _ in listens) < 0.98 * len(listens)  # exports are noisy


def _normalise_artist(name: str) -> str:
    return name.lower().split(" feat. ")[0].strip()


def _normalise_title(title: str) -> str:
    title = re.sub(r" \(feat\. [^)]*\)$", "", title.lower())
    return re.sub(r" - remastered( \d{4})?$", "", title).strip()


def test_seeding_twice_appends_without_id_conflicts() -> None:
    spec = SeedSpec(users=50, tracks=200, plays=3000, seed=3, now=NOW)
    with _fresh_database() as url:
        seed_url(url, spec)
        once = _counts(url)
        seed_url(url, spec)
        assert _counts(url) == {table: 2 * n for table, n in once.items()}
        # The second run's plays and listens point at the second run's users and tracks.
        assert (
            _value(
                url,
                """
            SELECT count(*) FROM play_history p JOIN users u ON u.id = p.user_id
            JOIN tracks t ON t.id = p.track_id
            WHERE (u.id > %(users)s) <> (t.id > %(tracks)s)
        """,
                {"users": spec.users, "tracks": spec.tracks},
            )
            == 0
        )
