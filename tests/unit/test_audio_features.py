"""Audio features on synthesized signals: each expected answer holds by construction."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tasks.analysis import audio_features
from tasks.analysis.analyse import mood_for
from tasks.analysis.audio_features import (
    AudioFeatures,
    AudioUnreadableError,
    estimate_tempo,
    extract_features,
    onset_frames,
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


# ---- streaming against the whole spectrogram --------------------------------------------
# extract_features gathers what each measure needs one block of spectra at a time. The
# reference below is the computation as it was before (the whole spectrogram at once,
# 190-270 MB at the peak for a two-minute excerpt), kept here alone to hold the streaming
# one to the same numbers; onset_frames and estimate_tempo read only the flux, unchanged.


def reference_read(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    with soundfile.SoundFile(path) as file:
        window = min(file.frames, int(max_seconds * file.samplerate))
        file.seek((file.frames - window) // 2)
        return file.read(window, dtype="float32", always_2d=True).mean(axis=1), file.samplerate


def reference_key_and_mode(
    magnitudes: np.ndarray, frequencies: np.ndarray
) -> tuple[str | None, str | None, float]:
    band = (frequencies >= 55) & (frequencies <= 2000)
    pitch_class = (np.round(12 * np.log2(frequencies[band] / 440.0)).astype(int) % 12 + 9) % 12
    power = (magnitudes[:, band] ** 2).sum(axis=0)
    chroma = np.bincount(pitch_class, weights=power, minlength=12)
    if chroma.sum() <= 0 or np.allclose(chroma, chroma[0]):
        return None, None, 0.0

    def best(profile: np.ndarray) -> tuple[float, int]:
        scores = [np.corrcoef(chroma, np.roll(profile, tonic))[0, 1] for tonic in range(12)]
        return float(max(scores)), int(np.argmax(scores))

    major, major_tonic = best(audio_features.MAJOR_PROFILE)
    minor, minor_tonic = best(audio_features.MINOR_PROFILE)
    if major >= minor:
        return audio_features.PITCH_CLASSES[major_tonic], "major", major - minor
    return audio_features.PITCH_CLASSES[minor_tonic], "minor", major - minor


def reference_features(samples: np.ndarray, rate: int) -> AudioFeatures:
    hop = rate // 100
    size = 1 << math.ceil(math.log2(0.046 * rate))
    padded = np.concatenate([samples, np.zeros(size, dtype=samples.dtype)])
    count = 1 + (len(samples) - 1) // hop
    window = np.hanning(size).astype(np.float32)
    starts = np.arange(count) * hop
    frames = padded[starts[:, None] + np.arange(size)] * window
    magnitudes = np.abs(np.fft.rfft(frames, axis=1)).astype(np.float32) / (window.sum() / 2)
    frequencies = np.fft.rfftfreq(size, 1 / rate)

    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    loudness_db = max(20 * math.log10(rms), -120.0) if rms > 0 else -120.0
    log_mag = np.log1p(100.0 * magnitudes)
    flux = np.concatenate([[0.0], np.maximum(np.diff(log_mag, axis=0), 0.0).mean(axis=1)])
    onsets = len(onset_frames(flux))
    duration = len(samples) / rate
    power = (magnitudes**2).sum(axis=0)
    key, mode, mode_strength = reference_key_and_mode(magnitudes, frequencies)
    return AudioFeatures(
        duration_seconds=duration,
        loudness_db=loudness_db,
        onset_rate=onsets / duration,
        energy=0.6 * min(max((loudness_db + 60) / 60, 0.0), 1.0)
        + 0.4 * min(onsets / duration / 6, 1.0),
        tempo=estimate_tempo(flux, rate / hop) if onsets >= 4 else None,
        brightness_hz=float((frequencies * power).sum() / power.sum()),
        key=key,
        mode=mode,
        mode_strength=mode_strength,
    )


def assert_same_features(streamed: AudioFeatures, whole: AudioFeatures) -> None:
    for name, value in asdict(whole).items():
        if isinstance(value, float):
            assert getattr(streamed, name) == pytest.approx(value, rel=1e-4), name
        else:
            assert getattr(streamed, name) == value, name


SIGNALS = {
    "clicks at 120 BPM": lambda: audio.click_track(120),
    "C major chord": lambda: audio.chord(*C_MAJOR),
    "noise": lambda: audio.noise(0.2),
    # 1,025 frames of a 220-sample hop: with 128 or 512 a block the last block is one
    # frame, its flux all from the block before's last frame.
    "noise, 1,025 frames": lambda: audio.noise(0.2, duration=11)[: 1024 * 220 + 1],
}


@pytest.mark.parametrize("signal", SIGNALS.values(), ids=SIGNALS.keys())
@pytest.mark.parametrize("block_frames", [128, 512, 500, 7, 1])
def test_streamed_features_equal_the_whole_spectrogram_ones(
    monkeypatch: pytest.MonkeyPatch, signal: Callable[[], np.ndarray], block_frames: int
) -> None:
    monkeypatch.setattr(audio_features, "SPECTRA_BLOCK_FRAMES", block_frames)
    samples = signal().astype(np.float32)

    assert_same_features(
        extract_features(samples, audio.RATE), reference_features(samples, audio.RATE)
    )


def test_streamed_features_match_at_44_1_khz() -> None:
    # The rate the ingest pipeline meets: 2048-sample frames, a 441-sample hop.
    samples = (audio.chord(*A_MINOR) + audio.click_track(95)[: len(audio.chord())]).astype(
        np.float32
    )
    rate = 44_100  # the same samples at twice the rate: an octave up, half as long
    streamed = extract_features(samples, rate)

    assert_same_features(streamed, reference_features(samples, rate))
    assert streamed.tempo is not None


def test_a_stereo_excerpt_is_mixed_to_mono_block_by_block_as_it_was_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    left, right = audio.click_track(120, duration=30), audio.noise(0.1, duration=30)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), audio.RATE)
    monkeypatch.setattr(audio_features, "READ_BLOCK_FRAMES", 10_007)

    samples, rate = read_audio(path, max_seconds=20)
    expected, _ = reference_read(path, max_seconds=20)

    assert rate == audio.RATE and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, expected)
    assert_same_features(extract_features(samples, rate), reference_features(expected, rate))
