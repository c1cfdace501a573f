"""The two audio analyses writing features of synthesized signals to a track's row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db.models import Track
from tasks.analysis.analyse import analyse_energy, detect_mood
from tests import audio
from tests import factories as f
from worker.settings import get_settings

# Nothing here goes through the broker: CI's RabbitMQ pass leaves it out.
pytestmark = pytest.mark.broker_independent

A_MINOR = (220.00, 261.63, 329.63)


def test_energy_analysis_stores_energy_tempo_and_features_on_the_track(
    session: Any, tmp_path: Path
) -> None:
    path = audio.write(tmp_path / "clicks.wav", audio.click_track(120))
    track = f.track(session, f.artist(session), audio_path=str(path))
    session.commit()

    result = analyse_energy(session, track.id, get_settings())
    session.commit()

    stored = session.scalars(select(Track).where(Track.id == track.id)).one()
    session.refresh(stored)
    assert stored.tempo == pytest.approx(120, abs=2)
    assert stored.energy_level == pytest.approx(result["energy"], abs=1e-4)
    assert stored.audio_features["onset_rate"] == pytest.approx(2.0, abs=0.1)


def test_mood_detection_stores_the_mood_with_the_features_it_used(
    session: Any, tmp_path: Path
) -> None:
    # Quiet, slow, minor and dark: low arousal, low valence.
    path = audio.write(tmp_path / "am.wav", audio.chord(*A_MINOR, amplitude=0.02))
    track = f.track(session, f.artist(session), audio_path=str(path))
    session.commit()

    detect_mood(session, track.id, get_settings())
    session.commit()

    session.refresh(track)
    assert track.mood == "melancholic"
    assert track.audio_features["mood"] == "melancholic"
    assert {"arousal", "valence", "energy", "mode_strength", "brightness_hz"} <= set(
        track.audio_features
    )


def test_a_relative_audio_path_is_read_from_the_audio_directory(session: Any) -> None:
    directory = get_settings().audio_directory
    directory.mkdir(parents=True, exist_ok=True)
    audio.write(directory / "relative.wav", audio.click_track(120, duration=8))
    track = f.track(session, f.artist(session), audio_path="relative.wav")
    session.commit()

    assert analyse_energy(session, track.id, get_settings())["tempo"] == pytest.approx(120, abs=2)
