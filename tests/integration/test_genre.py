"""Genre classification: the best-supported genre from the artist's evidence, per the rule."""

from __future__ import annotations

from typing import Any

import pytest

from db.models import Track
from tasks.analysis.analyse import classify_genre
from tests import factories as f

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent


def analysed(
    session: Any, by: Any, genre: str, energy: float, tempo: float, bright: float
) -> Track:
    return f.track(
        session,
        by,
        genre=genre,
        energy_level=energy,
        tempo=tempo,
        audio_features={"brightness_hz": bright},
    )


def audio_profiles(session: Any) -> None:
    """Three analysed tracks each of a quiet, slow, dark genre and a loud, fast, bright one."""
    others = f.artist(session, "Others", genres=[])
    for _ in range(3):
        analysed(session, others, "ambient", energy=0.2, tempo=80, bright=800)
        analysed(session, others, "techno", energy=0.9, tempo=130, bright=3000)


def test_the_genre_listed_for_the_artist_and_most_of_its_catalogue_wins(session: Any) -> None:
    band = f.artist(session, "Band", genres=["rock", "indie"])
    for genre in ["rock", "rock", "rock", "indie"]:
        f.track(session, band, genre=genre)
    new = f.track(session, band, "New", genre=None)
    session.commit()

    result = classify_genre(session, new.id)

    # rock: 0.5 * 1/2 listed + 0.5 * 3/4 of the catalogue = 0.625; indie: 0.25 + 0.125.
    assert (result["genre"], result["source"], result["confidence"]) == (
        "rock",
        "artist_evidence",
        0.625,
    )
    session.refresh(new)
    assert (new.genre, new.genre_source, new.genre_confidence) == ("rock", "artist_evidence", 0.625)


def test_a_tie_goes_to_the_genre_whose_audio_profile_is_nearest(session: Any) -> None:
    duo = f.artist(session, "Duo", genres=["ambient", "techno"])
    audio_profiles(session)
    new = f.track(
        session,
        duo,
        genre=None,
        energy_level=0.85,
        tempo=128,
        audio_features={"brightness_hz": 2800},
    )
    session.commit()

    result = classify_genre(session, new.id)

    assert (result["genre"], result["confidence"]) == ("techno", 0.25)
    assert set(result["evidence"]["tie_broken_by_audio"]) == {"ambient", "techno"}


def test_without_artist_evidence_the_nearest_audio_profile_is_taken_with_low_confidence(
    session: Any,
) -> None:
    unknown = f.artist(session, "Unknown", genres=[])
    audio_profiles(session)
    new = f.track(
        session,
        unknown,
        genre=None,
        energy_level=0.25,
        tempo=82,
        audio_features={"brightness_hz": 900},
    )
    session.commit()

    result = classify_genre(session, new.id)

    assert (result["genre"], result["source"]) == ("ambient", "audio_features")
    assert 0 < result["confidence"] <= 0.25


def test_with_no_evidence_at_all_the_genre_stays_unknown_and_says_why(session: Any) -> None:
    new = f.track(session, f.artist(session, "Nobody", genres=[]), genre=None)
    session.commit()

    result = classify_genre(session, new.id)

    assert result["genre"] is None and "no evidence" in result["evidence"]["reason"]
    session.refresh(new)
    assert new.genre is None


def test_a_supplied_genre_is_kept(session: Any) -> None:
    band = f.artist(session, "Band", genres=["rock"])
    for _ in range(3):
        f.track(session, band, genre="rock")
    new = f.track(session, band, genre="jazz")
    session.commit()

    assert classify_genre(session, new.id)["genre"] == "jazz"


def test_inferred_genres_are_not_evidence_for_the_next_track(session: Any) -> None:
    band = f.artist(session, "Band", genres=["rock"])
    f.track(session, band, genre="metal", genre_source="artist_evidence")
    new = f.track(session, band, genre=None)
    session.commit()

    assert classify_genre(session, new.id)["confidence"] == pytest.approx(0.5)
