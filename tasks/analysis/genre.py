"""Genre classification from the evidence at hand: the best-supported genre, never a guess.

The rule, for a track without a supplied genre:

1. **Candidates** are the genres its artist is listed with (``artists.genres``; Spotify's
   artist genres land there once enrichment has them) and the supplied genres of the
   artist's other tracks.
2. **Score** of a candidate, in [0, 1]: ``0.5 * listed + 0.5 * catalogue``, where
   ``listed`` is ``1 / n`` for each of the artist's ``n`` listed genres (0 if not listed),
   and ``catalogue`` is the share of the artist's other genre-tagged tracks in it.
3. **Ties** go to the candidate whose average audio features (energy, tempo, brightness
   over tracks with a supplied genre) lie nearest the track's own, then alphabetically.
4. With no candidate at all, the genre whose audio profile is nearest, with a low
   confidence (``0.25 * exp(-distance)``), if the track has been analysed and some genre
   has at least ``MIN_PROFILE_TRACKS`` analysed tracks.
5. Otherwise there is no evidence: the genre stays unknown, and the result says why.

The confidence is the winner's score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.queries import queries

SQL = queries("tasks.analysis", "analysis")
MIN_PROFILE_TRACKS = 3
AUDIO_ONLY_WEIGHT = 0.25


@dataclass(frozen=True)
class GenreVerdict:
    genre: str | None
    source: str | None  # artist_evidence | audio_features | None (no evidence)
    confidence: float
    evidence: dict[str, Any]


def _audio_distance(track: dict[str, float], profile: Any) -> float:
    # Each feature over a typical spread, so no one unit dominates.
    return math.sqrt(
        (track["energy"] - profile.energy) ** 2
        + ((track["tempo"] - profile.tempo) / 60) ** 2
        + ((track["brightness"] - profile.brightness) / 2000) ** 2
    )


def _profiles(session: Session, genres: list[str] | None) -> list[Any]:
    return list(
        session.execute(
            SQL["genre_audio_profiles"], {"genres": genres, "min_tracks": MIN_PROFILE_TRACKS}
        )
    )


def classify(session: Session, track_id: int, audio: dict[str, float] | None) -> GenreVerdict:
    """The verdict for ``track_id``; ``audio`` has its energy, tempo and brightness, if known."""
    rows = list(session.execute(SQL["genre_evidence"], {"track_id": track_id}))
    listed = sum(1 for row in rows if row.listed)
    catalogue = sum(row.catalogue_tracks for row in rows)
    scores = {
        row.genre: 0.5 * (1 / listed if row.listed else 0.0)
        + 0.5 * (row.catalogue_tracks / catalogue if catalogue else 0.0)
        for row in rows
    }
    evidence: dict[str, Any] = {
        "listed_genres": sorted(row.genre for row in rows if row.listed),
        "catalogue_tracks": {
            row.genre: row.catalogue_tracks for row in rows if row.catalogue_tracks
        },
    }
    if scores:
        top = max(scores.values())
        tied = sorted(g for g, s in scores.items() if math.isclose(s, top))
        if len(tied) > 1 and audio is not None:
            distances = {p.genre: _audio_distance(audio, p) for p in _profiles(session, tied)}
            evidence["tie_broken_by_audio"] = {g: round(d, 4) for g, d in distances.items()}
            tied.sort(key=lambda g: (distances.get(g, math.inf), g))
        return GenreVerdict(tied[0], "artist_evidence", round(top, 4), evidence)
    if audio is not None:
        profiles = _profiles(session, None)
        if profiles:
            nearest = min(profiles, key=lambda p: (_audio_distance(audio, p), p.genre))
            distance = _audio_distance(audio, nearest)
            evidence["audio_distance"] = round(distance, 4)
            confidence = round(AUDIO_ONLY_WEIGHT * math.exp(-distance), 4)
            return GenreVerdict(nearest.genre, "audio_features", confidence, evidence)
    evidence["reason"] = (
        "no evidence: the artist lists no genres, has no other tracks with a genre, and "
        + (
            "no genre has an audio profile yet"
            if audio is not None
            else "the track has no audio analysis"
        )
    )
    return GenreVerdict(None, None, 0.0, evidence)
