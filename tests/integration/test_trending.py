"""trending.calculate: window counts, listeners, and a score that rewards momentum and breadth."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import delete, select

from db.models import Track, TrendingTrack
from db.session import session_scope
from tasks.trending.scoring import TrendingReport, calculate_trending
from tests import factories as f

# The calculation runs in sessions of its own, and one test reads it from another.
pytestmark = pytest.mark.committed

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
HOUR, DAY, SECOND = dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(seconds=1)


def calculate(now: dt.datetime = NOW, top_n: int = 500) -> TrendingReport:
    with session_scope() as session:
        return calculate_trending(session, now, top_n)


def trending(session: Any) -> list[TrendingTrack]:
    session.expire_all()
    return list(session.scalars(select(TrendingTrack).order_by(TrendingTrack.rank)))


@pytest.fixture
def catalogue(session: Any) -> dict[str, Any]:
    """Five listeners and three tracks by one artist."""
    band = f.artist(session, "Band")
    data = {
        "users": [f.user(session) for _ in range(5)],
        "a": f.track(session, band, "A"),
        "b": f.track(session, band, "B"),
        "c": f.track(session, band, "C"),
    }
    session.commit()
    return data


@pytest.mark.broker_independent
def test_counts_and_listeners_up_to_the_exact_24_hour_and_7_day_boundaries(
    session: Any, catalogue: dict[str, Any]
) -> None:
    ann, bob, cid = catalogue["users"][:3]
    f.plays(session, ann, catalogue["a"], NOW - 24 * HOUR)  # exactly 24 h old: 7-day only
    f.plays(session, bob, catalogue["a"], NOW - 24 * HOUR + SECOND)  # a second inside 24 h
    f.plays(session, cid, catalogue["a"], NOW - 7 * DAY)  # exactly 7 days old: outside
    f.plays(session, cid, catalogue["a"], NOW - 7 * DAY + SECOND)  # a second inside 7 days
    session.commit()

    calculate()

    [row] = trending(session)
    assert (row.play_count_24h, row.play_count_7d) == (1, 3)
    assert (row.unique_listeners_24h, row.unique_listeners_7d) == (1, 3)
    assert (row.rank, row.calculated_at) == (1, NOW)


@pytest.mark.broker_independent
def test_unique_listeners_count_people_not_plays(session: Any, catalogue: dict[str, Any]) -> None:
    ann, bob = catalogue["users"][:2]
    f.plays(session, ann, catalogue["a"], NOW - HOUR, NOW - 2 * HOUR, NOW - 3 * HOUR)
    f.plays(session, bob, catalogue["a"], NOW - 3 * DAY)
    session.commit()

    calculate()

    [row] = trending(session)
    assert (row.play_count_7d, row.unique_listeners_7d, row.unique_listeners_24h) == (4, 2, 1)


@pytest.mark.broker_independent
def test_with_equal_7_day_counts_more_recent_plays_rank_higher(
    session: Any, catalogue: dict[str, Any]
) -> None:
    for listener in catalogue["users"][:3]:
        f.plays(session, listener, catalogue["a"], NOW - 5 * DAY)
        f.plays(session, listener, catalogue["b"], NOW - 5 * HOUR)
    session.commit()

    calculate()

    assert [row.track_id for row in trending(session)] == [catalogue["b"].id, catalogue["a"].id]


@pytest.mark.broker_independent
def test_many_listeners_beat_one_listeners_repeats(session: Any, catalogue: dict[str, Any]) -> None:
    fan, *others = catalogue["users"]
    f.plays(
        session,
        fan,
        catalogue["a"],
        *(NOW - n * 10 * dt.timedelta(minutes=1) for n in range(1, 101)),
    )
    for listener in others:
        f.plays(session, listener, catalogue["b"], NOW - 6 * HOUR)
    session.commit()

    calculate()

    rows = trending(session)
    assert [row.track_id for row in rows] == [catalogue["b"].id, catalogue["a"].id]
    assert rows[1].play_count_24h == 100  # the counts stay honest; only the score is capped


@pytest.mark.broker_independent
def test_a_track_with_no_plays_in_7_days_is_absent(session: Any, catalogue: dict[str, Any]) -> None:
    ann = catalogue["users"][0]
    f.plays(session, ann, catalogue["a"], NOW - HOUR)
    f.plays(session, ann, catalogue["b"], NOW - 8 * DAY)
    session.commit()

    calculate()

    assert [row.track_id for row in trending(session)] == [catalogue["a"].id]


@pytest.mark.broker_independent
def test_only_the_top_n_are_kept_ranked_from_one(session: Any, catalogue: dict[str, Any]) -> None:
    users = catalogue["users"]
    for count, name in ((3, "a"), (2, "b"), (1, "c")):
        for listener in users[:count]:
            f.plays(session, listener, catalogue[name], NOW - HOUR)
    session.commit()

    report = calculate(top_n=2)

    assert report.tracks == 2
    assert [(r.rank, r.track_id) for r in trending(session)] == [
        (1, catalogue["a"].id),
        (2, catalogue["b"].id),
    ]


@pytest.mark.broker_independent
def test_readers_see_the_previous_result_until_the_new_one_commits(
    session: Any, catalogue: dict[str, Any]
) -> None:
    ann = catalogue["users"][0]
    f.plays(session, ann, catalogue["a"], NOW - HOUR)
    session.commit()
    calculate()
    f.plays(session, ann, catalogue["b"], NOW - HOUR, NOW - 2 * HOUR)
    session.commit()

    with session_scope() as writer:
        calculate_trending(writer, NOW, 500)
        # Written but not committed: a reader still sees the whole previous result.
        assert [row.track_id for row in trending(session)] == [catalogue["a"].id]
        session.rollback()

    assert [row.track_id for row in trending(session)] == [catalogue["b"].id, catalogue["a"].id]


@pytest.mark.broker_independent
def test_a_deleted_tracks_plays_no_longer_count(session: Any, catalogue: dict[str, Any]) -> None:
    ann = catalogue["users"][0]
    f.plays(session, ann, catalogue["a"], NOW - HOUR)
    f.plays(session, ann, catalogue["b"], NOW - HOUR)
    session.commit()
    session.execute(delete(Track).where(Track.id == catalogue["b"].id))
    session.commit()

    calculate()

    assert [row.track_id for row in trending(session)] == [catalogue["a"].id]


def test_trending_runs_through_a_worker_by_its_public_name(
    app: Any, celery_worker: Any, session: Any, catalogue: dict[str, Any]
) -> None:
    f.plays(session, catalogue["users"][0], catalogue["a"], dt.datetime.now(dt.UTC) - HOUR)
    session.commit()

    report = app.send_task("trending.calculate").get(timeout=60)

    assert (report["status"], report["tracks"]) == ("done", 1)
    assert [row.track_id for row in trending(session)] == [catalogue["a"].id]
