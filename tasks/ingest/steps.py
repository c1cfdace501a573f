"""The pipeline's steps as plain functions: a local file and plain values in, a JSON-able
record out (what the job keeps in ``outputs[<step>]``, and what the next steps read).

No database, queue or clock here: the pipeline (``tasks.ingest.pipeline``) records each
step's output and decides what runs, the bench runs these same functions in one plain
process for its floor, and tests call them directly.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from tasks.ingest import images
from tasks.ingest.analysis import analyse
from tasks.ingest.probe import probe
from tasks.ingest.storage import Bucket, media_key
from tasks.ingest.tags import read_metadata

WAVEFORM_SIZE = (1200, 200)
COVER_MAX_EDGE = 1024  # the kept cover, from which thumbnails are (back)filled


def title_from_name(object_path: str) -> str:
    """A title for an untagged file: its name without extension, separators as spaces."""
    stem = posixpath.splitext(posixpath.basename(object_path))[0]
    return " ".join(stem.replace("_", " ").split()) or "Untitled"


def probe_step(media: Path, object_path: str, max_bytes: int) -> dict[str, Any]:
    """Kind, format and stream of the upload, and its tags; refuses what cannot be ingested
    (``IngestRefusedError``)."""
    result = probe(media, max_bytes).as_json()
    tags = result["tags"]
    result["title"] = tags.get("title") or title_from_name(object_path)
    result["artist"] = tags.get("artist") or "Unknown artist"
    return result


def analysis_step(media: Path, max_seconds: float, columns: int) -> dict[str, Any]:
    """The audio analysis (features and mood of the middle excerpt) and the whole file's
    waveform peaks, read in blocks."""
    analysis = analyse(media, max_seconds, columns)
    return {
        "features": analysis.as_json(),
        "peaks": [round(p, 4) for p in analysis.envelope.peaks],
    }


def _describe(key: str, data: bytes) -> dict[str, Any]:
    with Image.open(io.BytesIO(data)) as image:
        return {"path": key, "width": image.width, "height": image.height}


def thumbnail_records(
    bucket: Bucket, job_id: int, cover: Image.Image, sizes: Iterable[int]
) -> dict[str, dict[str, Any]]:
    """The cover's thumbnails written to the bucket: size -> where and how big."""
    made = {}
    for size, data in images.thumbnails(cover, sizes).items():
        key = media_key(job_id, f"cover-{size}.jpg")
        bucket.write_bytes(key, data)
        made[str(size)] = _describe(key, data)
    return made


def images_step(
    bucket: Bucket,
    job_id: int,
    *,
    title: str,
    artist: str,
    peaks: Sequence[float],
    embedded: bytes | None,
    uploaded: bytes | None,
    sizes: Iterable[int],
) -> dict[str, Any]:
    """The kept cover (uploaded, else embedded, else a placeholder), its thumbnails, the
    waveform and the share card, written under ``media/<job>/`` in the bucket. The keys
    are the job's own, so a second run overwrites the first run's files."""
    cover = images.choose_cover(embedded, uploaded, title, artist)
    kept = cover.image.copy()
    kept.thumbnail((COVER_MAX_EDGE, COVER_MAX_EDGE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    kept.save(buffer, format="JPEG", quality=images.JPEG_QUALITY)
    cover_key = media_key(job_id, "cover.jpg")
    bucket.write_bytes(cover_key, buffer.getvalue())

    made: dict[str, Any] = {
        "cover": {**_describe(cover_key, buffer.getvalue()), "source": cover.source},
        "thumbnails": thumbnail_records(bucket, job_id, cover.image, sizes),
    }
    if peaks:
        made["waveform"] = waveform_record(bucket, job_id, peaks)
    made["card"] = card_record(bucket, job_id, cover.image, title, artist, peaks)
    return made


def waveform_record(bucket: Bucket, job_id: int, peaks: Sequence[float]) -> dict[str, Any]:
    waveform = images.waveform_png(peaks, *WAVEFORM_SIZE)
    key = media_key(job_id, "waveform.png")
    bucket.write_bytes(key, waveform)
    return _describe(key, waveform)


def card_record(
    bucket: Bucket,
    job_id: int,
    cover: Image.Image,
    title: str,
    artist: str,
    peaks: Sequence[float],
) -> dict[str, Any]:
    card = images.share_card(cover, title, artist, peaks)
    key = media_key(job_id, "card.png")
    bucket.write_bytes(key, card)
    return _describe(key, card)


def embedded_cover(media: Path) -> bytes | None:
    """The art embedded in an audio file, if any."""
    return read_metadata(media).cover
