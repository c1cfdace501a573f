"""Audio features on synthesized signals: each expected answer holds by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from tasks.analysis import audio_features
from tasks.analysis.analyse import mood_for
from tasks.analysis.audio_features import (
    AudioFeatures,
    AudioUnreadableError,
    extract_features,
    read_audio,
)
from tests import audio

C_MAJOR = (261.63, 329.63, 392.00)
A_MINOR = (220.00, 261.63, 329.63)


def features_of(path: Path) -> AudioFeatures:
    return extract_features(*read_audio(path, max_seconds=120))


def test_loud_noise_has_more_energy_than_a_quiet_sine(tmp_path: Path) -> None:
    quiet = features_of(audio.write(tmp_path / "quiet.wav", audio.sine(440, 0.05)))
    loud = features_of(audio.write(tmp_path / "loud.wav", audio.noise(0.5)))

    assert 0 <= quiet.energy < loud.energy <= 1
    assert quiet.loudness_db == pytest.approx(-29.0, abs=0.5)  # 0.05 / sqrt(2) RMS
    assert loud.loudness_db == pytest.approx(-6.0, abs=0.5)


def test_a_click_track_at_120_bpm_measures_120_within_2(tmp_path: Path) -> None:
    measured = features_of(audio.write(tmp_path / "clicks.wav", audio.click_track(120)))

    assert measured.tempo == pytest.approx(120, abs=2)
    assert measured.onset_rate == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("bpm", [72, 95, 170])
def test_other_tempos_are_found_without_halving_or_doubling(tmp_path: Path, bpm: int) -> None:
    measured = features_of(audio.write(tmp_path / "clicks.wav", audio.click_track(bpm)))

    assert measured.tempo == pytest.approx(bpm, abs=2)


def test_a_steady_tone_has_no_tempo(tmp_path: Path) -> None:
    assert features_of(audio.write(tmp_path / "tone.wav", audio.sine(440, 0.3))).tempo is None


def test_a_major_chord_reads_as_major_and_a_minor_chord_as_minor(tmp_path: Path) -> None:
    major = features_of(audio.write(tmp_path / "c.wav", audio.chord(*C_MAJOR)))
    minor = features_of(audio.write(tmp_path / "am.wav", audio.chord(*A_MINOR)))

    assert (major.key, major.mode) == ("C", "major") and major.mode_strength > 0
    assert (minor.key, minor.mode) == ("A", "minor") and minor.mode_strength < 0


def features(
    energy: float, tempo: float | None, mode_strength: float, brightness: float
) -> AudioFeatures:
    return AudioFeatures(
        duration_seconds=10,
        loudness_db=-12,
        onset_rate=2,
        energy=energy,
        tempo=tempo,
        brightness_hz=brightness,
        key="C",
        mode="major" if mode_strength >= 0 else "minor",
        mode_strength=mode_strength,
    )


@pytest.mark.parametrize(
    ("energy", "tempo", "mode_strength", "brightness", "mood"),
    [
        (0.9, 170, -0.2, 1000, "energetic"),  # arousal 0.72 + 0.18: high whatever the key
        (0.6, 120, 0.2, 3000, "happy"),  # arousal 0.58, valence 0.63 + 0.25
        (0.6, 120, -0.2, 1000, "tense"),  # arousal 0.58, valence 0.07 + 0.05
        (0.2, 70, 0.2, 2000, "calm"),  # arousal 0.18, valence 0.63 + 0.15
        (0.2, 70, -0.2, 800, "melancholic"),  # arousal 0.18, valence 0.07 + 0.03
    ],
)
def test_moods_follow_the_documented_arousal_valence_quadrants(
    energy: float, tempo: float, mode_strength: float, brightness: float, mood: str
) -> None:
    assert mood_for(features(energy, tempo, mode_strength, brightness))[0] == mood


def test_a_missing_file_and_a_file_that_is_not_audio_are_permanent_errors(
    tmp_path: Path,
) -> None:
    text_file = tmp_path / "notes.wav"
    text_file.write_text("not audio at all")

    with pytest.raises(AudioUnreadableError, match="cannot read audio file"):
        read_audio(tmp_path / "absent.wav", max_seconds=120)
    with pytest.raises(AudioUnreadableError, match="cannot read audio file"):
        read_audio(text_file, max_seconds=120)


def test_a_stereo_excerpt_is_mixed_to_mono_block_by_block_as_it_was_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    left, right = audio.click_track(120, duration=30), audio.noise(0.1, duration=30)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), audio.RATE)
    monkeypatch.setattr(audio_features, "READ_BLOCK_FRAMES", 10_007)

    samples, rate = read_audio(path, max_seconds=20)

    with soundfile.SoundFile(path) as file:
        file.seek((file.frames - 20 * audio.RATE) // 2)
        whole = file.read(20 * audio.RATE, dtype="float32", always_2d=True).mean(axis=1)
    assert rate == audio.RATE and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, whole)
