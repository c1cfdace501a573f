"""Smart playlists without a database: arranging the parts, and which types are due when."""

from __future__ import annotations

import datetime as dt

from tasks.playlists.generation import Candidate, arrange, arrange_in_shares, kinds_due

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


def test_a_part_short_of_its_share_shrinks_the_others_with_it() -> None:
    recent = [Candidate(n, n) for n in range(1, 3)]  # 2 recent tracks: 60 % of at most 3
    similar = [Candidate(n, n) for n in range(101, 111)]

    order = arrange_in_shares([(recent, 60), (similar, 40)], length=10, max_artist_run=2)

    assert sorted(order) == [1, 2, 101]


def test_a_short_similar_part_shrinks_the_recent_part_too() -> None:
    recent = [Candidate(n, n) for n in range(1, 20)]
    similar = [Candidate(101, 101), Candidate(102, 102)]  # 40 % of at most 5

    order = arrange_in_shares([(recent, 60), (similar, 40)], length=10, max_artist_run=2)

    assert sorted(order) == [1, 2, 3, 101, 102]


def test_parts_that_can_fill_their_shares_get_them_exactly() -> None:
    recent = [Candidate(n, n) for n in range(1, 20)]
    similar = [Candidate(n, n) for n in range(101, 120)]

    order = arrange_in_shares([(recent, 60), (similar, 40)], length=10, max_artist_run=2)

    assert (len([t for t in order if t < 100]), len([t for t in order if t > 100])) == (6, 4)


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
