"""listening.aggregate: per-user stats, folded in incrementally and exactly once."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import make_url

from db.models import Track, UserListeningStats
from db.session import session_scope
from tasks.listening.aggregation import AggregationReport, aggregate_listening, aggregate_user
from tests import factories as f
from worker.errors import PermanentError

# Its code opens its own sessions (session_scope), and the aggregation's
# watermark is a transaction id: plays must really commit, in transactions of their own.
pytestmark = pytest.mark.committed

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
HOUR, DAY, SECOND = dt.timedelta(hours=1), dt.timedelta(days=1), dt.timedelta(seconds=1)


def aggregate(now: dt.datetime = NOW) -> AggregationReport:
    with session_scope() as session:
        return aggregate_listening(session, now)


def stats_of(session: Any, user_id: int) -> UserListeningStats | None:
    session.expire_all()
    return session.get(UserListeningStats, user_id)


def raw_connection() -> psycopg.Connection[Any]:
    from worker.settings import get_settings

    url = make_url(get_settings().database_url).set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False))


@pytest.fixture
def listener(session: Any) -> dict[str, Any]:
    """One user; two artists; three tracks: two rock songs by Ana, one jazz song by Ben."""
    ana = f.artist(session, "Ana", ["rock"])
    ben = f.artist(session, "Ben", ["jazz"])
    data = {
        "user": f.user(session),
        "rock1": f.track(session, ana, "Rock One"),
        "rock2": f.track(session, ana, "Rock Two"),
        "jazz": f.track(session, ben, "Jazz", genre="jazz"),
        "ana": ana,
        "ben": ben,
    }
    session.commit()
    return data


@pytest.mark.broker_independent
def test_all_time_totals_minutes_distinct_counts_and_first_and_last_play(
    session: Any, listener: dict[str, Any]
) -> None:
    user = listener["user"]
    f.plays(session, user, listener["rock1"], NOW - 3 * DAY, NOW - 2 * DAY)
    f.plays(session, user, listener["jazz"], NOW - 1 * HOUR, ms_played=90_000)
    session.commit()

    aggregate()

    stats = stats_of(session, user.id)
    assert stats is not None
    assert stats.total_plays == 3
    assert stats.total_ms_played == 2 * 180_000 + 90_000
    assert stats.total_minutes == Decimal("7.5")
    assert (stats.unique_tracks, stats.unique_artists) == (2, 2)
    assert (stats.first_played_at, stats.last_played_at) == (NOW - 3 * DAY, NOW - HOUR)


@pytest.mark.broker_independent
def test_listening_by_hour_of_day(session: Any, listener: dict[str, Any]) -> None:
    at_nine = dt.datetime(2026, 11, 20, 9, 15, tzinfo=dt.UTC)
    f.plays(
        session, listener["user"], listener["rock1"], at_nine, at_nine + DAY, at_nine + 12 * HOUR
    )
    session.commit()

    aggregate()

    hours = stats_of(session, listener["user"].id).hourly_plays  # type: ignore[union-attr]
    assert hours[9] == 2 and hours[21] == 1 and sum(hours) == 3


@pytest.mark.broker_independent
def test_plays_of_the_last_7_and_30_days_count_up_to_their_exact_boundaries(
    session: Any, listener: dict[str, Any]
) -> None:
    f.plays(
        session,
        listener["user"],
        listener["rock1"],
        NOW - 7 * DAY,  # exactly 7 days old: outside the 7-day window
        NOW - 7 * DAY + SECOND,  # a second inside it
        NOW - 30 * DAY,  # exactly 30 days old: outside the 30-day window
        NOW - 30 * DAY + SECOND,
    )  # a second inside it
    session.commit()

    aggregate()

    stats = stats_of(session, listener["user"].id)
    assert stats is not None
    assert (stats.plays_last_7d, stats.plays_last_30d, stats.total_plays) == (1, 3, 4)


@pytest.mark.broker_independent
def test_top_artists_genres_and_tracks_of_the_last_30_days_with_counts(
    session: Any, listener: dict[str, Any]
) -> None:
    user = listener["user"]
    f.plays(session, user, listener["jazz"], NOW - DAY, NOW - 2 * DAY, NOW - 3 * DAY)
    f.plays(session, user, listener["rock1"], NOW - DAY, NOW - 2 * DAY)
    f.plays(session, user, listener["rock2"], NOW - DAY)
    f.plays(session, user, listener["rock2"], *(NOW - 40 * DAY - n * HOUR for n in range(9)))
    session.commit()

    aggregate()

    stats = stats_of(session, user.id)
    assert stats is not None
    jazz, rock1, rock2 = listener["jazz"].id, listener["rock1"].id, listener["rock2"].id
    assert stats.top_tracks == [
        {"track_id": jazz, "title": "Jazz", "plays": 3},
        {"track_id": rock1, "title": "Rock One", "plays": 2},
        {"track_id": rock2, "title": "Rock Two", "plays": 1},
    ]
    assert stats.top_artists == [
        {"artist_id": listener["ana"].id, "name": "Ana", "plays": 3},
        {"artist_id": listener["ben"].id, "name": "Ben", "plays": 3},
    ]
    assert stats.top_genres == [{"genre": "jazz", "plays": 3}, {"genre": "rock", "plays": 3}]


@pytest.mark.broker_independent
def test_a_second_run_changes_nothing(session: Any, listener: dict[str, Any]) -> None:
    f.plays(session, listener["user"], listener["rock1"], NOW - DAY, NOW - 40 * DAY)
    session.commit()
    aggregate()

    def snapshot() -> list[Any]:
        session.expire_all()
        return [
            tuple(r)
            for r in session.execute(text("SELECT * FROM user_listening_stats ORDER BY user_id"))
        ]

    before = snapshot()
    report = aggregate()

    assert snapshot() == before
    assert report.users_folded == 0


@pytest.mark.broker_independent
def test_a_late_play_is_counted_exactly_once(session: Any, listener: dict[str, Any]) -> None:
    user = listener["user"]
    f.plays(session, user, listener["rock1"], NOW - HOUR)
    session.commit()
    aggregate()

    # Arrives after the run, played long before the plays already folded in.
    f.plays(session, user, listener["jazz"], NOW - 20 * DAY)
    session.commit()
    aggregate()
    aggregate()

    stats = stats_of(session, user.id)
    assert stats is not None
    assert (stats.total_plays, stats.unique_tracks, stats.plays_last_30d) == (2, 2, 2)
    assert stats.first_played_at == NOW - 20 * DAY


@pytest.mark.broker_independent
def test_a_play_whose_transaction_commits_after_a_run_is_not_lost(
    session: Any, listener: dict[str, Any]
) -> None:
    user, track = listener["user"], listener["rock1"]
    with raw_connection() as slow:
        # Inserted first, committed last: a watermark on ids would step over it.
        slow.execute(
            "INSERT INTO play_history (user_id, track_id, played_at, ms_played) "
            "VALUES (%s, %s, %s, 1000)",
            (user.id, track.id, NOW - 2 * HOUR),
        )
        f.plays(session, user, track, NOW - HOUR)
        session.commit()
        aggregate()
        slow.commit()
    aggregate()
    aggregate()

    stats = stats_of(session, user.id)
    assert stats is not None
    assert stats.total_plays == 2


@pytest.mark.broker_independent
def test_a_second_run_at_the_same_time_returns_at_once_saying_so(
    listener: dict[str, Any],
) -> None:
    with raw_connection() as other:
        other.execute("SELECT pg_advisory_lock(hashtext('listening.aggregate'))")
        report = aggregate()
        other.execute("SELECT pg_advisory_unlock(hashtext('listening.aggregate'))")

    assert report == AggregationReport("skipped", reason="another listening.aggregate is running")


@pytest.mark.broker_independent
def test_windowed_figures_expire_for_a_user_with_no_new_plays(
    session: Any, listener: dict[str, Any]
) -> None:
    f.plays(session, listener["user"], listener["rock1"], NOW - HOUR)
    session.commit()
    aggregate(NOW)

    aggregate(NOW + 8 * DAY)
    stats = stats_of(session, listener["user"].id)
    assert stats is not None
    assert (stats.plays_last_7d, stats.plays_last_30d) == (0, 1)

    aggregate(NOW + 31 * DAY)
    stats = stats_of(session, listener["user"].id)
    assert stats is not None
    assert (stats.plays_last_7d, stats.plays_last_30d, stats.top_tracks) == (0, 0, [])
    assert stats.total_plays == 1


@pytest.mark.broker_independent
def test_a_user_with_no_plays_gets_no_stats_row(session: Any, listener: dict[str, Any]) -> None:
    aggregate()

    assert stats_of(session, listener["user"].id) is None


@pytest.mark.broker_independent
def test_deleting_a_track_takes_its_plays_out_of_the_stats(
    session: Any, listener: dict[str, Any]
) -> None:
    user = listener["user"]
    f.plays(session, user, listener["rock1"], NOW - HOUR)
    f.plays(session, user, listener["jazz"], NOW - 2 * HOUR, NOW - 3 * HOUR)
    session.commit()
    aggregate()

    session.execute(delete(Track).where(Track.id == listener["jazz"].id))
    session.commit()
    report = aggregate()

    stats = stats_of(session, user.id)
    assert stats is not None
    assert report.users_rebuilt == 1
    assert (stats.total_plays, stats.unique_tracks, stats.unique_artists) == (1, 1, 1)
    assert (stats.plays_last_7d, [t["title"] for t in stats.top_tracks]) == (1, ["Rock One"])


@pytest.mark.broker_independent
def test_aggregate_user_rebuilds_one_user_from_their_whole_history(
    session: Any, listener: dict[str, Any]
) -> None:
    user = listener["user"]
    f.plays(session, user, listener["rock1"], NOW - HOUR, NOW - 50 * DAY)
    session.commit()
    aggregate()
    session.execute(update(UserListeningStats).values(total_plays=999, unique_tracks=7))
    session.commit()

    with session_scope() as run:
        aggregate_user(run, user.id, NOW)

    stats = stats_of(session, user.id)
    assert stats is not None
    assert (stats.total_plays, stats.unique_tracks, stats.plays_last_30d) == (2, 1, 1)


@pytest.mark.broker_independent
def test_aggregate_user_of_an_unknown_user_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="no user with id 424242"), session_scope() as run:
        aggregate_user(run, 424242, NOW)


def test_listening_tasks_run_through_a_worker_by_their_public_names(
    app: Any, celery_worker: Any, session: Any, listener: dict[str, Any]
) -> None:
    f.plays(session, listener["user"], listener["rock1"], dt.datetime.now(dt.UTC) - HOUR)
    session.commit()

    report = app.send_task("listening.aggregate").get(timeout=60)
    one = app.send_task("listening.aggregate_user", args=[listener["user"].id]).get(timeout=60)

    assert (report["status"], report["users_folded"]) == ("done", 1)
    assert (one["status"], one["users_rebuilt"], one["windows_refreshed"]) == ("done", 1, 1)
    session.expire_all()
    assert session.scalar(select(UserListeningStats.plays_last_7d)) == 1
