"""Synthesized audio for the analysis tests: every signal's expected answer is by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

RATE = 22_050


def seconds(duration: float, rate: int = RATE) -> np.ndarray:
    return np.arange(int(duration * rate)) / rate


def sine(frequency: float, amplitude: float, duration: float = 10.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * seconds(duration))


def noise(rms: float, duration: float = 10.0, seed: int = 1) -> np.ndarray:
    return rms * np.random.default_rng(seed).standard_normal(len(seconds(duration)))


def click_track(bpm: float, duration: float = 20.0, seed: int = 1) -> np.ndarray:
    """A 10 ms noise burst on every beat, silence between."""
    rng = np.random.default_rng(seed)
    signal = np.zeros(len(seconds(duration)))
    burst = int(0.01 * RATE)
    decay = np.exp(-np.arange(burst) / (0.002 * RATE))
    for beat in np.arange(0, duration, 60 / bpm):
        start = int(beat * RATE)
        end = min(start + burst, len(signal))
        signal[start:end] += (0.8 * decay * rng.standard_normal(burst))[: end - start]
    return signal


def chord(*frequencies: float, amplitude: float = 0.1, duration: float = 10.0) -> np.ndarray:
    return sum(
        (sine(f, amplitude, duration) for f in frequencies), np.zeros(len(seconds(duration)))
    )


def write(path: Path, signal: np.ndarray, rate: int = RATE) -> Path:
    soundfile.write(path, signal.astype(np.float32), rate)
    return path
