"""Per-track analysis (energy, mood, genre), run through the ledger (``worker.ledger``).

``analysis.energy_analysis``, ``analysis.mood_detection`` and
``analysis.genre_classification`` take a track id. The database queues them when a track
is inserted (db/triggers/tracks_queue_analysis.sql); ``worker.ledger.enqueue`` queues one
from code.

Moods, from the audio features (``tasks.analysis.audio_features``) on Russell's
arousal/valence plane:

- ``arousal = 0.8 * energy + 0.2 * tempo_score``, tempo_score mapping 60..180 BPM to 0..1
  (0.5 when no beat was found);
- ``valence = 0.7 * mode_score + 0.3 * brightness_score``, mode_score mapping the
  major-minor key strength -0.25..+0.25 to 0..1, brightness_score mapping a spectral
  centroid of 500..3500 Hz to 0..1;
- **energetic** when arousal >= 0.7; otherwise, with arousal >= 0.45, **happy** (valence
  >= 0.5) or **tense**; below that, **calm** (valence >= 0.5) or **melancholic**.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import cast, func, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from db.models import Track
from tasks.analysis.audio_features import (
    AudioFeatures,
    AudioUnreadableError,
    extract_features,
    read_audio,
)
from tasks.analysis.genre import classify
from worker.ledger import UnknownTrackError
from worker.settings import Settings

MOODS = ("energetic", "happy", "tense", "calm", "melancholic")


def _scale(value: float, low: float, high: float) -> float:
    return min(max((value - low) / (high - low), 0.0), 1.0)


def mood_for(features: AudioFeatures) -> tuple[str, dict[str, float]]:
    """The mood label and the arousal/valence it was read from (see the module's doc)."""
    tempo_score = 0.5 if features.tempo is None else _scale(features.tempo, 60, 180)
    arousal = 0.8 * features.energy + 0.2 * tempo_score
    mode_score = _scale(features.mode_strength, -0.25, 0.25)
    valence = 0.7 * mode_score + 0.3 * _scale(features.brightness_hz, 500, 3500)
    if arousal >= 0.7:
        mood = "energetic"
    elif arousal >= 0.45:
        mood = "happy" if valence >= 0.5 else "tense"
    else:
        mood = "calm" if valence >= 0.5 else "melancholic"
    return mood, {"arousal": round(arousal, 4), "valence": round(valence, 4)}


def _track(session: Session, track_id: int) -> Track:
    track = session.get(Track, track_id)
    if track is None:
        raise UnknownTrackError(f"there is no track {track_id}")
    return track


def audio_file(track: Track, settings: Settings) -> Path:
    if not track.audio_path:
        raise AudioUnreadableError(f"track {track.id} has no audio file (tracks.audio_path)")
    path = Path(track.audio_path)
    return path if path.is_absolute() else settings.audio_directory / path


def _features(session: Session, track_id: int, settings: Settings) -> AudioFeatures:
    path = audio_file(_track(session, track_id), settings)
    samples, rate = read_audio(path, settings.analysis_max_seconds)
    return extract_features(samples, rate)


def _store(session: Session, track_id: int, features: dict[str, Any], **columns: Any) -> None:
    # Merged in SQL: energy and mood may finish at the same moment for one track.
    merged = func.coalesce(Track.audio_features, cast({}, JSONB)).op("||")(cast(features, JSONB))
    session.execute(
        update(Track).where(Track.id == track_id).values(audio_features=merged, **columns)
    )


def analyse_energy(session: Session, track_id: int, settings: Settings) -> dict[str, Any]:
    features = _features(session, track_id, settings)
    _store(
        session,
        track_id,
        features.as_json(),
        energy_level=round(features.energy, 4),
        tempo=None if features.tempo is None else round(features.tempo, 2),
    )
    return {"track_id": track_id, "energy": features.energy, "tempo": features.tempo}


def detect_mood(session: Session, track_id: int, settings: Settings) -> dict[str, Any]:
    features = _features(session, track_id, settings)
    mood, plane = mood_for(features)
    used = {**features.as_json(), **plane, "mood": mood}
    _store(session, track_id, used, mood=mood)
    return {"track_id": track_id, "mood": mood, **plane}


def classify_genre(session: Session, track_id: int) -> dict[str, Any]:
    track = _track(session, track_id)
    if track.genre is not None and track.genre_source is None:
        return {"track_id": track_id, "genre": track.genre, "source": "supplied", "kept": True}
    audio = None
    features = track.audio_features or {}
    if track.energy_level is not None and track.tempo is not None and "brightness_hz" in features:
        audio = {
            "energy": track.energy_level,
            "tempo": track.tempo,
            "brightness": float(features["brightness_hz"]),
        }
    verdict = classify(session, track_id, audio)
    if verdict.genre is not None:
        session.execute(
            update(Track)
            .where(Track.id == track_id)
            .values(
                genre=verdict.genre,
                genre_source=verdict.source,
                genre_confidence=verdict.confidence,
            )
        )
    return {
        "track_id": track_id,
        "genre": verdict.genre,
        "source": verdict.source,
        "confidence": verdict.confidence,
        "evidence": verdict.evidence,
    }
