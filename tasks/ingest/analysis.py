"""The ingest pipeline's analysis step: the catalogue's audio analysis on an uploaded file.

Two reads, each in bounded memory whatever the file's length, so a 60-minute upload
costs what a 3-minute one does:

- the features (energy, tempo, key, mode, brightness; the mood read from them) are the
  existing analysis (``tasks.analysis.audio_features``, ``tasks.analysis.analyse.mood_for``)
  on an excerpt of at most ``max_seconds`` from the middle of the file, which
  ``read_audio`` seeks to and reads alone: the same numbers the per-track analysis
  stores for a catalogue track, from the same code;
- the waveform envelope (the peak level in each of ``columns`` slices of the file), the
  duration and the whole-file loudness come from one streaming pass over every block of
  the file (``soundfile.blocks``), holding one block and the envelope at a time. The
  pass also proves the whole file decodes: the probe checks only its head and its tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from tasks.analysis.analyse import mood_for
from tasks.analysis.audio_features import AudioFeatures, extract_features, read_audio
from tasks.ingest.probe import TruncatedFileError

# 64k frames: 0.5 MB of stereo float32 per block, large enough that the per-block
# overhead vanishes against libsndfile's decoding.
BLOCK_FRAMES = 65_536
# A header's frame count is exact for PCM, FLAC and Ogg, but only an estimate for an MP3
# without a Xing/LAME header; a shortfall within this is not evidence of damage.
SHORTFALL_TOLERANCE_SECONDS = 0.5
SHORTFALL_TOLERANCE_FRACTION = 0.005
SILENCE_DB = -120.0


@dataclass(frozen=True)
class Envelope:
    """What one pass over the whole file measures."""

    peaks: tuple[float, ...]  # per column: the largest |sample| on any channel, 0..1
    frames: int  # decoded, which for an estimated header may differ from the header's
    sample_rate: int
    loudness_db: float  # RMS over the whole file, all channels, dBFS
    peak_db: float

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass(frozen=True)
class MediaAnalysis:
    features: AudioFeatures  # of the excerpt
    mood: str
    arousal: float
    valence: float
    envelope: Envelope

    def as_json(self) -> dict[str, Any]:
        """Plain values for the job's record and the track's ``audio_features``."""
        excerpt = self.features.as_json()
        # The excerpt's own duration and loudness keep their values under excerpt_ names;
        # the plain names are the whole file's.
        excerpt["excerpt_seconds"] = excerpt.pop("duration_seconds")
        excerpt["excerpt_loudness_db"] = excerpt.pop("loudness_db")
        return {
            **excerpt,
            "duration_seconds": round(self.envelope.duration_seconds, 4),
            "loudness_db": round(self.envelope.loudness_db, 4),
            "peak_db": round(self.envelope.peak_db, 4),
            "mood": self.mood,
            "arousal": self.arousal,
            "valence": self.valence,
        }


def _db(level: float) -> float:
    return max(20 * math.log10(level), SILENCE_DB) if level > 0 else SILENCE_DB


def waveform_envelope(path: Path, columns: int, block_frames: int = BLOCK_FRAMES) -> Envelope:
    """The peak per column, duration and loudness of the whole file, one block at a time."""
    if columns < 1:
        raise ValueError(f"columns must be at least 1, not {columns}")
    path = Path(path)
    peaks = np.zeros(columns, dtype=np.float32)
    squares = 0.0
    decoded, rate = 0, 0
    try:
        with soundfile.SoundFile(str(path)) as audio:
            declared, rate, channels, file_format = (
                audio.frames,
                audio.samplerate,
                audio.channels,
                audio.format,
            )
            # Columns are slices of the declared length; should an estimated header fall
            # short of the decoded length, the excess lands in the last column.
            span = max(declared, 1)
            for block in audio.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
                levels = np.abs(block).max(axis=1)
                squares += float(np.square(block, dtype=np.float64).sum())
                column = np.minimum(
                    (np.arange(decoded, decoded + len(block), dtype=np.int64) * columns) // span,
                    columns - 1,
                )
                # Within a block the column index only grows: one reduce per run of it.
                starts = np.flatnonzero(np.diff(column, prepend=-1))
                np.maximum.at(peaks, column[starts], np.maximum.reduceat(levels, starts))
                decoded += len(block)
    except (RuntimeError, OSError) as exc:  # libsndfile's errors are RuntimeErrors
        reason = " ".join(str(exc).split())
        raise TruncatedFileError(
            f"{path.name!r} does not decode past {decoded / max(rate, 1):.2f} s: {reason}"
        ) from exc
    tolerance = max(SHORTFALL_TOLERANCE_SECONDS * rate, SHORTFALL_TOLERANCE_FRACTION * declared)
    if declared - decoded > tolerance:
        raise TruncatedFileError(
            f"{path.name!r} is a truncated {file_format} file: it decodes "
            f"{decoded / rate:.2f} s of the {declared / rate:.2f} s its header declares"
        )
    if decoded == 0:
        raise TruncatedFileError(f"{path.name!r} holds no audio")
    rms = math.sqrt(squares / (decoded * channels))
    return Envelope(
        peaks=tuple(float(p) for p in np.minimum(peaks, 1.0)),
        frames=decoded,
        sample_rate=rate,
        loudness_db=_db(rms),
        peak_db=_db(float(peaks.max())),
    )


def analyse(path: Path, max_seconds: float, columns: int) -> MediaAnalysis:
    """The features and mood of the file's middle ``max_seconds``; the whole file's envelope."""
    path = Path(path)
    envelope = waveform_envelope(path, columns)
    features = extract_features(*read_audio(path, max_seconds))
    mood, plane = mood_for(features)
    return MediaAnalysis(
        features=features,
        mood=mood,
        arousal=plane["arousal"],
        valence=plane["valence"],
        envelope=envelope,
    )
