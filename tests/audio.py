"""Synthesized audio for the analysis tests: every signal's expected answer is by construction."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import soundfile
from mutagen import id3
from mutagen.flac import FLAC, Picture
from mutagen.mp3 import MP3
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from PIL import Image, ImageDraw

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


# ---- files for the ingest tests (tests/unit/test_ingest_media.py) ----------------------

CD_RATE = 44_100


def stereo(signal: np.ndarray) -> np.ndarray:
    return np.stack([signal, signal], axis=1)


def write_long_wav(path: Path, duration: float, rate: int = CD_RATE, seed: int = 1) -> Path:
    """Stereo 16-bit noise written ten seconds at a time: a long file never whole in memory."""
    rng = np.random.default_rng(seed)
    block = 10 * rate
    with soundfile.SoundFile(path, "w", rate, 2, subtype="PCM_16") as out:
        for start in range(0, int(duration * rate), block):
            frames = min(block, int(duration * rate) - start)
            out.write((0.2 * rng.standard_normal((frames, 2))).astype(np.float32))
    return path


def image_bytes(
    image_format: str, size: tuple[int, int], colour: tuple[int, int, int], noise: bool = False
) -> bytes:
    """An encoded image (``"PNG"``, ``"JPEG"``) of one colour with a white square in it; with
    ``noise``, random pixels instead, which compress to nearly their raw size."""
    if noise:
        pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), np.uint8)
        image = Image.fromarray(pixels, "RGB")
    else:
        image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle(
        (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(255, 255, 255)
    )
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def tag(
    path: Path,
    cover: bytes | None = None,
    cover_mime: str = "image/png",
    **fields: str,
) -> Path:
    """Tags ``path`` with mutagen as each format carries them: ID3 in MP3 and WAV, Vorbis
    comments in FLAC and Ogg; ``fields`` are title, artist, album, genre, date, tracknumber.
    The cover goes in as an ID3 APIC frame, a FLAC picture or a Vorbis
    METADATA_BLOCK_PICTURE comment."""
    id3_frames = {
        "title": id3.TIT2,
        "artist": id3.TPE1,
        "album": id3.TALB,
        "genre": id3.TCON,
        "date": id3.TDRC,
        "tracknumber": id3.TRCK,
    }
    suffix = path.suffix.lower()
    if suffix in (".mp3", ".wav"):
        file = MP3(path) if suffix == ".mp3" else WAVE(path)
        if file.tags is None:
            file.add_tags()
        for name, value in fields.items():
            file.tags.add(id3_frames[name](encoding=3, text=[value]))
        if cover is not None:
            file.tags.add(id3.APIC(encoding=3, mime=cover_mime, type=3, desc="", data=cover))
        file.save()
        return path
    vorbis = FLAC(path) if suffix == ".flac" else OggVorbis(path)
    for name, value in fields.items():
        vorbis[name] = value
    if cover is not None:
        picture = Picture()
        picture.type, picture.mime, picture.data = 3, cover_mime, cover
        if isinstance(vorbis, FLAC):
            vorbis.add_picture(picture)
        else:
            vorbis["metadata_block_picture"] = base64.b64encode(picture.write()).decode("ascii")
    vorbis.save()
    return path
