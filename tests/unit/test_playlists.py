"""Smart playlists without a database: arranging the parts, and which types are due when."""

from __future__ import annotations

import datetime as dt

from tasks.playlists.generation import Candidate, arrange, kinds_due

MONDAY = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


# --- arrangement ------------------------------------------------------------------------


def test_no_artist_runs_longer_than_allowed_and_the_rest_is_left_out() -> None:
    a = [Candidate(n, artist_id=1) for n in range(1, 6)]
    b = [Candidate(10, artist_id=2)]

    assert arrange([(a + b, 10)], max_artist_run=2) == [1, 2, 10, 3, 4]


def test_a_track_is_never_placed_twice() -> None:
    first = [Candidate(1, 1), Candidate(2, 2)]
    second = [Candidate(2, 2), Candidate(3, 3)]

    assert arrange([(first, 2), (second, 2)], max_artist_run=1) == [1, 2, 3]


def test_parts_are_interleaved_in_proportion_to_their_quotas() -> None:
    recent = [Candidate(n, n) for n in range(1, 7)]
    similar = [Candidate(n, n) for n in range(101, 105)]

    order = arrange([(recent, 6), (similar, 4)], max_artist_run=2)

    assert ["r" if t < 100 else "s" for t in order] == list("rsrsrrsrsr")


# --- the generators ---------------------------------------------------------------------


# --- schedule, expiry, tasks ------------------------------------------------------------


def test_weekly_types_run_on_mondays_or_when_forced() -> None:
    tuesday = (MONDAY + DAY).date()
    assert kinds_due(None, tuesday, force=False) == ["daily_mix", "new_for_you"]
    assert kinds_due(None, MONDAY.date(), force=False) == [
        "daily_mix",
        "discovery_weekly",
        "new_for_you",
        "forgotten_favorites",
    ]
    assert kinds_due("discovery_weekly", tuesday, force=True) == ["discovery_weekly"]
