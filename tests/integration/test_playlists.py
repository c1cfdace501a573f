"""Smart playlists: the four generators' rules, arrangement, reproducibility, expiry, fan-out."""

from __future__ import annotations

import datetime as dt
from itertools import groupby
from typing import Any

import pytest
from sqlalchemy import select, text

from db.models import AggregationWatermark, SmartPlaylist, Track, TrendingTrack
from db.session import session_scope
from tasks.playlists.expiry import delete_expired_playlists
from tasks.playlists.generation import Rules, generate_playlists
from tests import factories as f
from tests.support import runs_of, wait_for

# Generation runs in sessions of its own (session_scope), as the task does.
pytestmark = pytest.mark.committed

MONDAY = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
DAY, HOUR = dt.timedelta(days=1), dt.timedelta(hours=1)
SMALL = Rules(length=10, max_artist_run=2)  # 6 recent + 4 similar in a daily mix


def generate(
    kinds: list[str], user_id: int, now: dt.datetime = MONDAY, rules: Rules = SMALL
) -> dict[str, int]:
    with session_scope() as session:
        return generate_playlists(session, kinds, now, user_id=user_id, rules=rules)


def playlist(session: Any, user_id: int, kind: str) -> SmartPlaylist | None:
    session.expire_all()
    return session.scalar(
        select(SmartPlaylist).where(
            SmartPlaylist.user_id == user_id, SmartPlaylist.playlist_type == kind
        )
    )


def artists_of(session: Any, track_ids: list[int]) -> list[int]:
    query = select(Track.id, Track.artist_id).where(Track.id.in_(track_ids))
    by_id: dict[int, int] = dict(session.execute(query).all())  # type: ignore[arg-type]
    return [by_id[t] for t in track_ids]


# --- arrangement ------------------------------------------------------------------------


# --- the generators ---------------------------------------------------------------------


@pytest.fixture
def library(session: Any) -> dict[str, Any]:
    """Twelve artists of four tracks each; rock artists 0-5, jazz 6-9, pop 10-11."""
    genres = ["rock"] * 6 + ["jazz"] * 4 + ["pop"] * 2
    artists = [f.artist(session, f"Artist {n}", [g]) for n, g in enumerate(genres)]
    tracks = {
        (n, k): f.track(
            session,
            a,
            f"A{n} T{k}",
            popularity=90 - 5 * n - k,
            release_date=(MONDAY - 400 * DAY).date(),
        )
        for n, a in enumerate(artists)
        for k in range(4)
    }
    session.commit()
    return {"artists": artists, "tracks": tracks, "user": f.user(session)}


def test_daily_mix_is_60_percent_recent_favourites_and_40_percent_similar_unplayed(
    session: Any, library: dict[str, Any]
) -> None:
    user, tracks = library["user"], library["tracks"]
    # Eight tracks of the last 30 days, by artists 0-7; (n, 0) is played 8 - n times.
    for n in range(8):
        f.plays(session, user, tracks[(n, 0)], *(MONDAY - (h + 1) * HOUR for h in range(8 - n)))
    session.commit()

    generate(["daily_mix"], user.id)

    mix = playlist(session, user.id, "daily_mix")
    assert mix is not None and not mix.cold_start and len(mix.track_ids) == 10
    recent = [t for t in mix.track_ids if t in {tracks[(n, 0)].id for n in range(8)}]
    assert recent == [tracks[(n, 0)].id for n in range(6)]  # the six favourites, in order
    similar = [t for t in mix.track_ids if t not in recent]
    favourite_artists = {library["artists"][n].id for n in range(8)}
    assert len(similar) == 4
    assert all(a in favourite_artists for a in artists_of(session, similar))


def test_daily_mix_keeps_its_60_40_split_when_history_is_thin(
    session: Any, library: dict[str, Any]
) -> None:
    user, tracks = library["user"], library["tracks"]
    f.plays(session, user, tracks[(0, 0)], MONDAY - HOUR)
    f.plays(session, user, tracks[(1, 0)], MONDAY - 2 * HOUR)
    session.commit()

    generate(["daily_mix"], user.id)

    mix = playlist(session, user.id, "daily_mix")
    assert mix is not None
    recent = {tracks[(0, 0)].id, tracks[(1, 0)].id}
    assert len([t for t in mix.track_ids if t in recent]) == 2
    # The similar part shrinks with the recent one: 2 recent tracks are 60 % of at most 3.
    assert len(mix.track_ids) == 2 + 1


def test_discovery_weekly_holds_only_unplayed_recent_releases_of_the_top_5_genres(
    session: Any, library: dict[str, Any]
) -> None:
    user = library["user"]
    band = {g: f.artist(session, f"New {g}", [g]) for g in ("g1", "g2", "g3", "g4", "g5", "g6")}
    old = {g: f.track(session, a, f"old {g}") for g, a in band.items()}
    # Plays make g1..g5 the top five genres (10, 9, 8, 7, 6 plays); g6 gets one.
    for plays, g in zip((10, 9, 8, 7, 6, 1), band, strict=True):
        f.plays(session, user, old[g], *(MONDAY - (100 + n) * DAY for n in range(plays)))

    def release(g: str, days_ago: int, title: str) -> Track:
        return f.track(
            session, band[g], title, release_date=(MONDAY - days_ago * DAY).date(), popularity=50
        )

    fresh = release("g1", 10, "fresh")
    fresh_g5 = release("g5", 89, "fresh g5, 89 days")
    played = release("g1", 10, "already played")
    f.plays(session, user, played, MONDAY - HOUR)  # not yet aggregated: still excluded
    release("g1", 90, "exactly 90 days old")
    release("g1", 100, "too old")
    release("g6", 5, "not a top-5 genre")
    session.commit()

    generate(["discovery_weekly"], user.id)

    weekly = playlist(session, user.id, "discovery_weekly")
    assert weekly is not None
    assert set(weekly.track_ids) == {fresh.id, fresh_g5.id}
    assert weekly.expires_at == MONDAY + 7 * DAY


def test_new_for_you_holds_only_last_30_day_releases_by_the_top_10_artists(
    session: Any, library: dict[str, Any]
) -> None:
    user, artists, tracks = library["user"], library["artists"], library["tracks"]
    # Artists 0..10 played 11..1 times: artist 10 is eleventh, outside the top ten.
    for n in range(11):
        f.plays(session, user, tracks[(n, 0)], *(MONDAY - (40 + k) * DAY for k in range(11 - n)))

    def release(n: int, days_ago: int) -> Track:
        return f.track(
            session,
            artists[n],
            f"new {n} {days_ago}",
            release_date=(MONDAY - days_ago * DAY).date(),
        )

    by_top_artist = release(0, 5)
    by_tenth = release(9, 29)
    release(10, 5)  # eleventh artist
    release(0, 30)  # exactly 30 days old
    release(0, 45)
    session.commit()

    generate(["new_for_you"], user.id)

    new = playlist(session, user.id, "new_for_you")
    assert new is not None
    assert new.track_ids == [by_top_artist.id, by_tenth.id]  # newest first
    assert new.expires_at == MONDAY + DAY


def test_forgotten_favorites_need_3_plays_and_none_in_the_last_60_days(
    session: Any, library: dict[str, Any]
) -> None:
    user, t = library["user"], library["tracks"]
    f.plays(session, user, t[(0, 0)], MONDAY - 61 * DAY, MONDAY - 70 * DAY, MONDAY - 80 * DAY)
    f.plays(session, user, t[(1, 0)], MONDAY - 100 * DAY, MONDAY - 101 * DAY)  # only two
    f.plays(
        session, user, t[(2, 0)], MONDAY - 60 * DAY, *(MONDAY - (90 + n) * DAY for n in range(4))
    )
    f.plays(
        session, user, t[(3, 0)], MONDAY - 10 * DAY, *(MONDAY - (90 + n) * DAY for n in range(4))
    )
    session.commit()

    generate(["forgotten_favorites"], user.id)

    forgotten = playlist(session, user.id, "forgotten_favorites")
    assert forgotten is not None
    assert forgotten.track_ids == [t[(0, 0)].id]


def test_a_user_without_history_gets_a_cold_start_mix_and_no_other_types(
    session: Any, library: dict[str, Any]
) -> None:
    newcomer = library["user"]
    trending = library["tracks"][(11, 3)]  # the least popular track, but trending now
    session.add(
        TrendingTrack(
            track_id=trending.id,
            trend_score=9.0,
            play_count_24h=40,
            play_count_7d=90,
            unique_listeners_24h=30,
            unique_listeners_7d=60,
            calculated_at=MONDAY,
            rank=1,
        )
    )
    session.commit()

    written = generate(
        ["daily_mix", "discovery_weekly", "new_for_you", "forgotten_favorites"], newcomer.id
    )

    mix = playlist(session, newcomer.id, "daily_mix")
    assert mix is not None and mix.cold_start
    assert len(mix.track_ids) == 10
    # From trending and the most popular tracks, shuffled: never from the long tail.
    ranked = sorted(library["tracks"].values(), key=lambda t: -t.popularity)
    assert set(mix.track_ids) <= {t.id for t in ranked[:24]} | {trending.id}
    assert trending.id in mix.track_ids
    assert written == {
        "cold_start": 1,
        "daily_mix": 1,
        "discovery_weekly": 0,
        "new_for_you": 0,
        "forgotten_favorites": 0,
    }
    assert playlist(session, newcomer.id, "discovery_weekly") is None


def test_the_same_day_draws_the_same_playlist_and_the_next_day_another(
    session: Any, library: dict[str, Any]
) -> None:
    user, tracks = library["user"], library["tracks"]
    for n in range(10):
        f.plays(session, user, tracks[(n, 0)], MONDAY - (n + 1) * HOUR)
    session.commit()

    generate(["daily_mix"], user.id)
    first = playlist(session, user.id, "daily_mix").track_ids  # type: ignore[union-attr]
    generate(["daily_mix"], user.id)
    again = playlist(session, user.id, "daily_mix").track_ids  # type: ignore[union-attr]
    generate(["daily_mix"], user.id, now=MONDAY + DAY)
    tomorrow = playlist(session, user.id, "daily_mix").track_ids  # type: ignore[union-attr]

    assert again == first
    assert tomorrow != first


def test_generated_playlists_never_run_one_artist_past_the_limit(
    session: Any, library: dict[str, Any]
) -> None:
    user, tracks = library["user"], library["tracks"]
    # Lots of one artist: the mix must still alternate.
    for k in range(4):
        f.plays(session, user, tracks[(0, k)], *(MONDAY - (k * 5 + h + 1) * HOUR for h in range(5)))
    f.plays(session, user, tracks[(6, 0)], MONDAY - 50 * HOUR)
    session.commit()

    generate(["daily_mix"], user.id, rules=Rules(length=10, max_artist_run=1))

    artists = artists_of(session, playlist(session, user.id, "daily_mix").track_ids)  # type: ignore[union-attr]
    assert max(len(list(run)) for _, run in groupby(artists)) == 1
    assert len(artists) == len(set(playlist(session, user.id, "daily_mix").track_ids))  # type: ignore[union-attr]


# --- schedule, expiry, tasks ------------------------------------------------------------


def test_expired_playlists_are_deleted_and_live_ones_kept(
    session: Any, library: dict[str, Any]
) -> None:
    user = library["user"]
    session.add_all(
        [
            SmartPlaylist(
                user_id=user.id, playlist_type="daily_mix", track_ids=[1], expires_at=MONDAY - HOUR
            ),
            SmartPlaylist(
                user_id=user.id,
                playlist_type="new_for_you",
                track_ids=[1],
                expires_at=MONDAY + HOUR,
            ),
        ]
    )
    session.commit()

    with session_scope() as run:
        deleted = delete_expired_playlists(run, MONDAY, batch=1)

    assert deleted == 1
    session.expire_all()
    assert [p.playlist_type for p in session.scalars(select(SmartPlaylist))] == ["new_for_you"]


def test_an_unknown_type_or_user_is_a_clear_error_not_a_retry(
    app: Any, celery_worker: Any, library: dict[str, Any]
) -> None:
    bad_type = app.send_task("playlists.generate", args=[library["user"].id, "weekly_jams"])
    with pytest.raises(
        Exception, match=r"argument playlist_type: must be one of daily_mix.*\(got 'weekly_jams'\)"
    ):
        bad_type.get(timeout=30)
    bad_user = app.send_task("playlists.generate", args=[987654, "daily_mix"])
    with pytest.raises(Exception, match="no user with id 987654"):
        bad_user.get(timeout=30)


def test_generate_all_fans_out_over_workers_and_returns_counts_per_type(
    app: Any, celery_worker: Any, session: Any, library: dict[str, Any]
) -> None:
    now = dt.datetime.now(dt.UTC)
    listener, newcomer = library["user"], f.user(session)
    f.plays(session, listener, library["tracks"][(0, 0)], now - HOUR, now - 2 * HOUR)
    # The day's aggregation has finished (generate_all waits for it otherwise).
    session.add(AggregationWatermark(name="listening.aggregate", last_xid=0, updated_at=now))
    session.commit()

    result = app.send_task("playlists.generate_all", kwargs={"force": True})
    counts = result.get(timeout=90)

    assert counts["daily_mix"] == 2 and counts["cold_start"] == 1
    # The fan-in runs under the fan-out's task id: a success with that id means the whole
    # fan-out finished (what the recovery after a broker reset relies on).
    runs = wait_for(
        lambda: (
            runs
            if len(runs := [r for r in runs_of(session, result.id) if r.finished_at]) >= 2
            else []
        )
    )
    assert {(r.task_name, r.status) for r in runs} == {
        ("playlists.generate_all", "fanned_out"),
        ("playlists.add_up", "success"),
    }
    session.expire_all()
    rows = session.execute(select(SmartPlaylist.user_id, SmartPlaylist.playlist_type)).all()
    assert (newcomer.id, "daily_mix") in rows and (listener.id, "daily_mix") in rows


def test_a_chunk_that_fails_once_is_retried_without_duplicating_anything(
    app: Any, celery_worker: Any, session: Any, library: dict[str, Any], engine: Any
) -> None:
    user = library["user"]
    f.plays(session, user, library["tracks"][(0, 0)], dt.datetime.now(dt.UTC) - HOUR)
    session.commit()
    # The first write fails with a serialization failure (transient); sequences are not
    # transactional, so the retry's write goes through.
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE fail_once"))
        conn.execute(
            text("""
            CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('fail_once') = 1 THEN
                    RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
                END IF;
                RETURN NULL;
            END $$""")
        )
        conn.execute(
            text(
                "CREATE TRIGGER fail_once AFTER INSERT ON smart_playlists "
                "FOR EACH STATEMENT EXECUTE FUNCTION fail_once()"
            )
        )
    try:
        now = dt.datetime.now(dt.UTC).isoformat()
        result = app.send_task(
            "playlists.generate_chunk", args=[user.id, user.id + 1, ["daily_mix"], now]
        )
        counts = result.get(timeout=60)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER fail_once ON smart_playlists"))
            conn.execute(text("DROP FUNCTION fail_once()"))
            conn.execute(text("DROP SEQUENCE fail_once"))

    assert counts["daily_mix"] == 1
    session.expire_all()
    assert session.scalar(text("SELECT count(*) FROM smart_playlists")) == 1

    def statuses() -> list[str]:
        query = text("SELECT status FROM task_runs WHERE task_id = :id ORDER BY id")
        return list(session.scalars(query, {"id": result.id}))

    assert wait_for(lambda: statuses() == ["retry", "success"])


def test_generate_all_waits_for_the_days_aggregation_then_builds_on_it(
    app: Any,
    celery_worker: Any,
    session: Any,
    library: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks.playlists import tasks as playlist_tasks

    monkeypatch.setattr(playlist_tasks, "AGGREGATION_POLL_SECONDS", 1)
    now = dt.datetime.now(dt.UTC)
    f.plays(session, library["user"], library["tracks"][(0, 0)], now - HOUR, now - 2 * HOUR)
    session.commit()

    # The playlists fire first: they wait, visibly.
    playlists = app.send_task("playlists.generate_all", kwargs={"force": True})
    waiting = wait_for(
        lambda: [r for r in runs_of(session, playlists.id) if r.status == "retry"], timeout=30
    )
    assert "waiting for the day's listening.aggregate" in (waiting[0].error or "")
    assert not playlists.ready()

    # The aggregation finishes; the playlists follow, built on its rollups.
    app.send_task("listening.aggregate").get(timeout=60)
    counts = playlists.get(timeout=90)
    assert counts["daily_mix"] >= 1
