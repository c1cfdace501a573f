"""Tags and embedded cover art from an audio file, read with mutagen.

libsndfile decodes the audio but reads almost none of its metadata, so mutagen reads it:
ID3 (MP3, and the ``id3 `` chunk of a WAV) and Vorbis comments (FLAC, Ogg Vorbis and
Opus), each mapped to the same few fields (no MP4 atoms: libsndfile cannot decode AAC, so
the probe refuses such files before their tags matter). The cover comes from ID3 ``APIC``
frames, FLAC ``PICTURE`` blocks or the Vorbis ``METADATA_BLOCK_PICTURE`` comment,
preferring the front cover where a file carries several pictures.

Tags are evidence, not a contract: a file whose tag block mutagen cannot parse still has
audio worth ingesting, so an unreadable tag block reads as no tags rather than a refusal.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mutagen
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3

# ID3v2 / FLAC picture type 3: "Cover (front)".
FRONT_COVER = 3

# Vorbis comment names, lower case as mutagen's VComment lookups are case-insensitive.
_VORBIS_FIELDS = {
    "title": "title",
    "artist": "artist",
    "album": "album",
    "genre": "genre",
    "date": "date",
    "track_number": "tracknumber",
}
_ID3_FIELDS = {
    "title": "TIT2",
    "artist": "TPE1",
    "album": "TALB",
    "genre": "TCON",
    "date": "TDRC",
    "track_number": "TRCK",
}


@dataclass(frozen=True)
class Tags:
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    date: str | None = None  # as tagged: "2019", "2019-04-01"
    year: int | None = None
    track_number: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FileMetadata:
    tags: Tags
    cover: bytes | None  # the encoded image (JPEG, PNG, ...), as embedded


def _first(values: Any) -> str | None:
    if values is None:
        return None
    if isinstance(values, str | bytes):
        values = [values]
    for value in values:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if text.strip():
            return text.strip()
    return None


def _leading_int(text: str | None) -> int | None:
    # "3/12" (track 3 of 12) and "2019-04-01" both start with the number wanted.
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def _tags(fields: Mapping[str, str | None]) -> Tags:
    date = fields.get("date")
    year = _leading_int(date)
    return Tags(
        title=fields.get("title"),
        artist=fields.get("artist"),
        album=fields.get("album"),
        genre=fields.get("genre"),
        date=date,
        year=year if year is not None and 1000 <= year <= 9999 else None,
        track_number=_leading_int(fields.get("track_number")),
    )


def _best_picture(pictures: Sequence[tuple[int, bytes]]) -> bytes | None:
    usable = [(kind, data) for kind, data in pictures if data]
    if not usable:
        return None
    front = [data for kind, data in usable if kind == FRONT_COVER]
    return front[0] if front else usable[0][1]


def _id3_metadata(tags: ID3) -> FileMetadata:
    fields = {
        name: _first(tags[frame].text) for name, frame in _ID3_FIELDS.items() if frame in tags
    }
    if "TCON" in tags:
        # Old taggers write genres as ID3v1 numbers, "(17)"; mutagen names them ("Rock").
        fields["genre"] = _first(tags["TCON"].genres)
    pictures = [(int(frame.type), bytes(frame.data)) for frame in tags.getall("APIC")]
    return FileMetadata(_tags(fields), _best_picture(pictures))


def _vorbis_pictures(comments: Any) -> list[tuple[int, bytes]]:
    pictures = []
    for encoded in comments.get("metadata_block_picture", []):
        try:
            picture = Picture(base64.b64decode(encoded))
        except (binascii.Error, ValueError, mutagen.MutagenError):
            continue  # one bad picture comment does not hide the others
        pictures.append((int(picture.type), bytes(picture.data)))
    return pictures


def _vorbis_metadata(file: Any) -> FileMetadata:
    comments = file.tags
    fields = (
        {name: _first(comments.get(key)) for name, key in _VORBIS_FIELDS.items()}
        if comments is not None
        else {}
    )
    pictures = (
        [(int(p.type), bytes(p.data)) for p in file.pictures] if isinstance(file, FLAC) else []
    )
    if comments is not None:
        pictures += _vorbis_pictures(comments)
    return FileMetadata(_tags(fields), _best_picture(pictures))


def read_metadata(path: Path) -> FileMetadata:
    """The file's tags and embedded cover; empty when it has none or mutagen cannot read them."""
    try:
        file = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError):
        return FileMetadata(Tags(), None)
    if file is None or (file.tags is None and not getattr(file, "pictures", None)):
        return FileMetadata(Tags(), None)
    tags = file.tags
    if isinstance(tags, ID3):
        return _id3_metadata(tags)
    return _vorbis_metadata(file)
