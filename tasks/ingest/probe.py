"""The ingest pipeline's first step: what an uploaded file is, or why it cannot be ingested.

A file is ``audio`` when libsndfile decodes it (the analysis reads it with the same
library, so anything accepted here can be analysed), or an ``image`` when Pillow decodes
it as one of the cover formats. Everything else is refused with an ``IngestRefusedError``
whose message is the one-line reason; it is a ``PermanentError``, so the pipeline fails
the job at once: no retry turns a text file into a song.

The checks, cheapest first, so an oversized upload is refused before a byte is decoded:

1. size: zero bytes, or more than the limit the caller passes;
2. content, never the file name: a text file renamed ``.wav`` is not audio;
3. completeness. libsndfile is lenient with damage, so it is asked directly: a WAV whose
   RIFF header declares more data than the file holds is truncated (libsndfile would
   quietly play the half that is left), an Ogg must end with its end-of-stream page,
   and every audio file must decode its last second where its header says that second
   is (a FLAC or MP3 with its end chopped off fails here). An image must decode whole.
   The analysis's streaming pass checks again that the whole length decodes, which
   damage in the middle of a file would fail.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import soundfile
from PIL import Image, UnidentifiedImageError

from tasks.ingest.tags import Tags, read_metadata
from worker.errors import PermanentError

Kind = Literal["audio", "image"]

# Covers arrive as photographs or artwork exports; these are what people upload, and
# what Pillow decodes without optional plugins.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
# The share card and thumbnails are made from the image in memory: this many pixels at
# most (a 100-megapixel upload would need ~400 MB decoded).
MAX_IMAGE_PIXELS = 50_000_000
# How much of the end of an audio file is decoded to prove it is all there.
TAIL_SECONDS = 1.0
# An Ogg page is at most 65,307 bytes: the last one starts within this of the end.
OGG_TAIL_BYTES = 65_536


class IngestRefusedError(PermanentError):
    """The file cannot be ingested; the message is the reason, on one line."""


class EmptyFileError(IngestRefusedError):
    pass


class FileTooLargeError(IngestRefusedError):
    pass


class NotMediaError(IngestRefusedError):
    """Neither audio libsndfile decodes nor an image of an accepted format."""


class TruncatedFileError(IngestRefusedError):
    """The file's header promises more than the file holds, or its data does not decode."""


@dataclass(frozen=True)
class ProbeResult:
    kind: Kind
    format: str  # libsndfile's ("WAV", "FLAC", "OGG", "MP3") or Pillow's ("PNG", "JPEG")
    size_bytes: int
    # Audio only:
    subtype: str | None = None  # "PCM_16", "VORBIS", ...
    duration_seconds: float | None = None
    channels: int | None = None
    sample_rate: int | None = None
    frames: int | None = None
    tags: Tags = field(default_factory=Tags)
    has_cover_art: bool = False
    # Image only:
    width: int | None = None
    height: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def probe(path: Path, max_bytes: int) -> ProbeResult:
    """What ``path`` holds, or ``IngestRefusedError`` saying why it cannot be ingested."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        # A missing upload is not a property of the file: the storage layer decides
        # whether that is worth a retry, so this is not a refusal.
        raise FileNotFoundError(f"cannot read {path.name!r}: {exc.strerror}") from exc
    if size == 0:
        raise EmptyFileError(f"{path.name!r} is empty (0 bytes)")
    if size > max_bytes:
        raise FileTooLargeError(
            f"{path.name!r} is {size:,} bytes, over the limit of {max_bytes:,} bytes"
        )
    image = _probe_image(path, size)
    if image is not None:
        return image
    return _probe_audio(path, size)


def _probe_image(path: Path, size: int) -> ProbeResult | None:
    """The image's description; None when Pillow does not recognise it as an image at all."""
    with warnings.catch_warnings():
        # Pillow warns between 1x and 2x its own pixel limit; ours is checked below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise FileTooLargeError(f"{path.name!r} is an image of too many pixels") from exc
        except (UnidentifiedImageError, OSError):
            return None
    with image:
        if image.format not in IMAGE_FORMATS:
            raise NotMediaError(
                f"{path.name!r} is a {image.format} image; covers must be one of "
                f"{', '.join(IMAGE_FORMATS)}"
            )
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise FileTooLargeError(
                f"{path.name!r} is {width}x{height} pixels, over the limit of "
                f"{MAX_IMAGE_PIXELS:,} pixels"
            )
        try:
            image.load()  # decodes every pixel: a truncated JPEG or PNG fails here
        except (OSError, SyntaxError, ValueError) as exc:
            raise TruncatedFileError(
                f"{path.name!r} is a damaged {image.format} image: {exc}"
            ) from exc
        return ProbeResult(
            kind="image", format=str(image.format), size_bytes=size, width=width, height=height
        )


def _riff_shortfall(path: Path, size: int) -> int:
    """Bytes a RIFF WAV's data chunk declares beyond the end of the file (0 when complete)."""
    with path.open("rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return 0  # RF64, W64 and the rest: libsndfile's own checks apply
        position = 12
        while position + 8 <= size:
            file.seek(position)
            chunk_id, chunk_size = struct.unpack("<4sI", file.read(8))
            if chunk_id == b"data":
                return max(0, position + 8 + int(chunk_size) - size)
            position += 8 + chunk_size + (chunk_size & 1)  # chunks are word-aligned
    # The header ends before any data chunk: the cut came before the audio.
    return 1


def _ogg_is_terminated(path: Path, size: int) -> bool:
    """Whether the file ends with a whole Ogg page flagged end-of-stream.

    An Ogg header has no total length, and libsndfile takes the last whole page it finds
    as the end, so an Ogg cut at a page boundary would pass for a shorter file; but only
    the real last page carries the end-of-stream flag, and it ends exactly at the end of
    the file.
    """
    with path.open("rb") as file:
        start = max(0, size - OGG_TAIL_BYTES)
        file.seek(start)
        tail = file.read()
    found = len(tail)
    while (found := tail.rfind(b"OggS", 0, found)) >= 0:
        header = tail[found : found + 27]
        if len(header) == 27 and header[4] == 0:  # stream structure version 0
            segments = header[26]
            lacing = tail[found + 27 : found + 27 + segments]
            if len(lacing) == segments and found + 27 + segments + sum(lacing) == len(tail):
                return bool(header[5] & 0x04)
    return False


def _probe_audio(path: Path, size: int) -> ProbeResult:
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as exc:  # libsndfile's errors are RuntimeErrors
        raise NotMediaError(f"{path.name!r} is neither audio nor an image: {_reason(exc)}") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise TruncatedFileError(
            f"{path.name!r} is {info.format} with no decodable audio (truncated or empty)"
        )
    if info.format == "WAV" and (missing := _riff_shortfall(path, size)) > 0:
        raise TruncatedFileError(
            f"{path.name!r} is truncated: its header declares {missing:,} more bytes of audio "
            "than the file holds"
        )
    if info.format == "OGG" and not _ogg_is_terminated(path, size):
        raise TruncatedFileError(
            f"{path.name!r} is truncated: its last Ogg page is missing or incomplete"
        )
    _check_tail(path, info.format, info.frames, info.samplerate)
    metadata = read_metadata(path)
    return ProbeResult(
        kind="audio",
        format=info.format,
        subtype=info.subtype,
        size_bytes=size,
        duration_seconds=info.frames / info.samplerate,
        channels=info.channels,
        sample_rate=info.samplerate,
        frames=info.frames,
        tags=metadata.tags,
        has_cover_art=metadata.cover is not None,
    )


def _check_tail(path: Path, file_format: str, frames: int, rate: int) -> None:
    tail = min(frames, int(TAIL_SECONDS * rate))
    try:
        with soundfile.SoundFile(str(path)) as audio:
            audio.seek(frames - tail)
            got = len(audio.read(tail, dtype="float32", always_2d=True))
    except (RuntimeError, OSError) as exc:
        raise TruncatedFileError(
            f"{path.name!r} is a damaged or truncated {file_format} file: its last second "
            f"does not decode ({_reason(exc)})"
        ) from exc
    if got < tail:
        raise TruncatedFileError(
            f"{path.name!r} is a truncated {file_format} file: it ends "
            f"{(tail - got) / rate:.2f} s before its header says"
        )


def _reason(exc: BaseException) -> str:
    # libsndfile's messages can span lines ("Error : ...\n"); a reason is one line.
    return " ".join(str(exc).split()) or type(exc).__name__
