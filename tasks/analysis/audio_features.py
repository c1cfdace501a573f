"""Audio features from a track's file: loudness, onsets, energy, tempo, brightness, key and mode.

Decoding is libsndfile's (``soundfile``: WAV, FLAC, Ogg, MP3); the measures are a few
short-time spectra in NumPy, the textbook ones, written down so a reader can check them:

- **loudness**: RMS level in dBFS over the analysed excerpt;
- **onsets**: peaks of the spectral flux (the summed rise of log-magnitude between 10 ms
  frames) above a moving median; ``onset_rate`` is onsets per second;
- **energy** in [0, 1]: ``0.6 * loudness_score + 0.4 * onset_score``, where loudness_score
  maps -60..0 dBFS to 0..1 and onset_score maps 0..6 onsets a second to 0..1. A loud,
  busy signal is energetic; a quiet, steady one is not;
- **tempo** (BPM): the autocorrelation of the flux over lags of 60..200 BPM, weighted by a
  log-normal prior around 120 BPM (one octave wide) against halving/doubling errors, the
  peak refined by parabolic interpolation; None when the flux has no periodicity;
- **brightness**: the spectral centroid in Hz (power-weighted over the excerpt);
- **key and mode**: the chroma (power per pitch class, 55 Hz to 2 kHz) correlated with the
  Krumhansl-Kessler major and minor key profiles in all twelve keys; ``mode_strength`` is
  the best major correlation minus the best minor one (positive: major).

No whole spectrogram is held: the excerpt is mixed to mono as it is read, and the spectra
come 128 frames at a time, each block adding its frames' flux and its power per frequency
bin to what the measures read, so a two-minute excerpt at 44.1 kHz costs its 21 MB of
samples and a few MB more (about 30 MB over the imports at the peak, 210-275 MB before;
``python -m bench.analysis_memory``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from worker.errors import PermanentError

FRAMES_PER_SECOND = 100
# Frames of spectra computed at once. Small, because NumPy's rfft of a block peaks at about
# five times its output (21 MB for 512 frames at 44.1 kHz, 5 MB for 128); no slower.
SPECTRA_BLOCK_FRAMES = 128
# Samples read (and squared in float64) at once: 64k frames, 0.5 MB of stereo float32.
READ_BLOCK_FRAMES = 65_536
MIN_BPM, MAX_BPM, PRIOR_BPM = 60.0, 200.0, 120.0
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


class AudioUnreadableError(PermanentError):
    """The file is missing, empty or not audio: no retry will change that."""


@dataclass(frozen=True)
class AudioFeatures:
    duration_seconds: float  # of the excerpt analysed
    loudness_db: float
    onset_rate: float
    energy: float
    tempo: float | None
    brightness_hz: float
    key: str | None
    mode: str | None
    mode_strength: float

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def read_audio(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    """Mono float samples of at most ``max_seconds`` from the middle of the file, and the rate."""
    try:
        with soundfile.SoundFile(path) as audio:
            rate = audio.samplerate
            window = min(audio.frames, int(max_seconds * rate))
            audio.seek((audio.frames - window) // 2)
            # Mixed down block by block: only the mono excerpt is ever held, not the
            # excerpt in all its channels as well (42 MB more for two minutes of stereo).
            samples = np.empty(window, dtype=np.float32)
            block = np.empty((min(READ_BLOCK_FRAMES, window), audio.channels), dtype=np.float32)
            filled = 0
            while filled < window:
                read = audio.read(min(len(block), window - filled), out=block)
                if len(read) == 0:  # an estimated header (MP3) promised more than there is
                    break
                read.mean(axis=1, out=samples[filled : filled + len(read)])
                filled += len(read)
    except (OSError, RuntimeError) as exc:  # libsndfile's errors are RuntimeErrors
        raise AudioUnreadableError(f"cannot read audio file {str(path)!r}: {exc}") from exc
    if filled < rate // 2:
        raise AudioUnreadableError(
            f"audio file {str(path)!r} has {filled / rate:.2f} s of audio; at least 0.5 s is needed"
        )
    return samples[:filled], rate


def _frame_size(rate: int) -> int:
    return 1 << math.ceil(math.log2(0.046 * rate))  # ~46 ms: 2048 samples at 44.1 kHz


def _spectra(samples: np.ndarray, rate: int) -> Iterator[np.ndarray]:
    """Magnitude spectra of Hann-windowed frames every 10 ms, ``SPECTRA_BLOCK_FRAMES`` frames
    at a time: the whole spectrogram of a two-minute excerpt would be 49 MB."""
    hop = rate // FRAMES_PER_SECOND
    size = _frame_size(rate)
    count = 1 + (len(samples) - 1) // hop
    window = np.hanning(size).astype(np.float32)
    scale = window.sum() / 2  # so a full-scale sine peaks at about 1
    for first in range(0, count, SPECTRA_BLOCK_FRAMES):
        frames = min(SPECTRA_BLOCK_FRAMES, count - first)
        span = samples[first * hop : (first + frames - 1) * hop + size]
        if len(span) < (frames - 1) * hop + size:  # the last frames run past the end
            span = np.concatenate(
                [span, np.zeros((frames - 1) * hop + size - len(span), dtype=samples.dtype)]
            )
        windowed = np.lib.stride_tricks.sliding_window_view(span, size)[::hop] * window
        yield np.abs(np.fft.rfft(windowed, axis=1)).astype(np.float32) / scale


def spectral_flux(magnitudes: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Per frame, the mean rise of log-magnitude since the frame before. ``previous`` is the
    magnitude spectrum of the frame before the first (the previous block's last); without
    one the first frame is the excerpt's, whose flux is 0."""
    log_mag = np.log1p(100.0 * magnitudes)
    rise = np.maximum(np.diff(log_mag, axis=0), 0.0).mean(axis=1)
    first = 0.0
    if previous is not None:
        first = float(np.maximum(log_mag[0] - np.log1p(100.0 * previous), 0.0).mean())
    return np.concatenate([[first], rise])


def onset_frames(flux: np.ndarray) -> np.ndarray:
    """Local maxima (within 30 ms) that rise 0.05 above the moving median (within 250 ms)."""
    if len(flux) < 3:
        return np.array([], dtype=int)
    padded = np.pad(flux, 25, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 51)
    baseline = np.median(windows, axis=1)
    local = np.lib.stride_tricks.sliding_window_view(np.pad(flux, 3, mode="edge"), 7).max(axis=1)
    return np.flatnonzero((flux >= local) & (flux > baseline + 0.05))


def estimate_tempo(flux: np.ndarray, frames_per_second: float) -> float | None:
    envelope = flux - flux.mean()
    n = len(envelope)
    spectrum = np.fft.rfft(envelope, 2 * n)
    autocorr = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    if autocorr[0] <= 0:
        return None
    lags = np.arange(
        int(frames_per_second * 60 / MAX_BPM), int(frames_per_second * 60 / MIN_BPM) + 1
    )
    lags = lags[(lags > 1) & (lags < n - 1)]
    if len(lags) == 0:
        return None
    bpm = 60 * frames_per_second / lags
    prior = np.exp(-0.5 * np.log2(bpm / PRIOR_BPM) ** 2)
    strength = autocorr[lags] / autocorr[0]
    best = int(np.argmax(strength * prior))
    if strength[best] < 0.3:  # no periodicity worth the name
        return None
    # A pulse correlates as well at twice its period as at its period: the beat is the
    # shortest lag that is (nearly) as strong, as long as it stays in range.
    while True:
        half = int(np.argmin(np.abs(lags - lags[best] / 2)))
        if (
            half == best
            or abs(lags[half] * 2 - lags[best]) > 1
            or strength[half] < 0.8 * strength[best]
        ):
            break
        best = half
    lag = float(lags[best])
    left, centre, right = autocorr[lags[best] - 1 : lags[best] + 2]
    curvature = left - 2 * centre + right
    if curvature < 0:
        lag += 0.5 * (left - right) / curvature
    return float(60 * frames_per_second / lag)


def key_and_mode(
    power: np.ndarray, frequencies: np.ndarray
) -> tuple[str | None, str | None, float]:
    """The key from ``power``, each frequency bin's power summed over the excerpt's frames."""
    band = (frequencies >= 55) & (frequencies <= 2000)
    pitch = np.round(12 * np.log2(frequencies[band] / 440.0)).astype(int) % 12
    pitch_class = (pitch + 9) % 12  # 440 Hz is A
    chroma = np.bincount(pitch_class, weights=power[band], minlength=12)
    if chroma.sum() <= 0 or np.allclose(chroma, chroma[0]):
        return None, None, 0.0

    def best(profile: np.ndarray) -> tuple[float, int]:
        scores = [np.corrcoef(chroma, np.roll(profile, tonic))[0, 1] for tonic in range(12)]
        tonic = int(np.argmax(scores))
        return float(scores[tonic]), tonic

    major, major_tonic = best(MAJOR_PROFILE)
    minor, minor_tonic = best(MINOR_PROFILE)
    if major >= minor:
        return PITCH_CLASSES[major_tonic], "major", major - minor
    return PITCH_CLASSES[minor_tonic], "minor", major - minor


def extract_features(samples: np.ndarray, rate: int) -> AudioFeatures:
    hop = rate // FRAMES_PER_SECOND
    frames_per_second = rate / hop
    frequencies = np.fft.rfftfreq(_frame_size(rate), 1 / rate)
    duration = len(samples) / rate
    # What each measure needs of the spectra, gathered one block at a time: the flux per
    # frame (onsets, tempo) and the power per bin (brightness, key).
    fluxes: list[np.ndarray] = []
    power = np.zeros(len(frequencies))
    previous: np.ndarray | None = None
    for magnitudes in _spectra(samples, rate):
        fluxes.append(spectral_flux(magnitudes, previous))
        power += np.square(magnitudes, dtype=np.float64).sum(axis=0)
        previous = magnitudes[-1].copy()  # a view would keep the whole block alive
    flux = np.concatenate(fluxes)
    squares = sum(
        float(np.square(samples[start : start + READ_BLOCK_FRAMES], dtype=np.float64).sum())
        for start in range(0, len(samples), READ_BLOCK_FRAMES)
    )
    rms = math.sqrt(squares / len(samples))
    loudness_db = max(20 * math.log10(rms), -120.0) if rms > 0 else -120.0
    onsets = len(onset_frames(flux))
    onset_rate = onsets / duration
    loudness_score = min(max((loudness_db + 60) / 60, 0.0), 1.0)
    onset_score = min(onset_rate / 6, 1.0)
    brightness = float((frequencies * power).sum() / power.sum()) if power.sum() > 0 else 0.0
    key, mode, mode_strength = key_and_mode(power, frequencies)
    return AudioFeatures(
        duration_seconds=duration,
        loudness_db=loudness_db,
        onset_rate=onset_rate,
        energy=0.6 * loudness_score + 0.4 * onset_score,
        # A steady signal's flux is numerical noise: no beat to measure.
        tempo=estimate_tempo(flux, frames_per_second) if onsets >= 4 else None,
        brightness_hz=brightness,
        key=key,
        mode=mode,
        mode_strength=mode_strength,
    )
