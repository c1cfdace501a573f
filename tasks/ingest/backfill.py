"""One step for every ingested track that lacks its output, without re-running the others.

``automation ingest backfill images`` after a thumbnail size is added to
INGEST_THUMBNAIL_SIZES makes that size for the whole catalogue from each track's kept
cover (and any missing waveform or card); ``backfill analysis`` analyses again the
tracks whose analysis is missing. In batches of ``batch`` tracks, each batch committed
with its images before the next one is sent, so a backfill over a large catalogue is many
short tasks, resumable where it stopped, and running it twice does nothing the second
time (it looks for what is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from db.models import Track
from db.queries import queries
from tasks.ingest import catalogue, images, steps
from tasks.ingest.storage import Bucket
from worker.settings import Settings

SQL = queries("tasks.ingest", "ingest")
BACKFILL_STEPS = ("analysis", "images")
BATCH = 50


@dataclass(frozen=True)
class BatchDone:
    tracks: int  # tracks given what they lacked
    last_track_id: int  # the next batch starts after this one
    more: bool  # a full batch: there may be more


def backfill_batch(
    session: Session, bucket: Bucket, settings: Settings, step: str, after: int, batch: int = BATCH
) -> BatchDone:
    if step == "images":
        return _images(session, bucket, settings, after, batch)
    if step == "analysis":
        return _analysis(session, bucket, settings, after, batch)
    raise ValueError(f"cannot backfill step {step!r}; one of {', '.join(BACKFILL_STEPS)}")


def _images(
    session: Session, bucket: Bucket, settings: Settings, after: int, batch: int
) -> BatchDone:
    rows = session.execute(
        SQL["lacking_images"],
        {"sizes": list(settings.thumbnail_sizes), "after": after, "batch": batch},
    ).all()
    for row in rows:
        made: dict[str, Any]
        if row.cover_key is None:
            # No kept cover to start from: the images step as the job ran it.
            with bucket.local_copy(row.object_path) as media:
                made = steps.images_step(
                    bucket,
                    row.job_id,
                    title=row.title,
                    artist=row.artist,
                    peaks=row.peaks or [],
                    embedded=steps.embedded_cover(media),
                    uploaded=bucket.read_bytes(row.cover_path) if row.cover_path else None,
                    sizes=settings.thumbnail_sizes,
                )
        else:
            cover = images.decode_image(bucket.read_bytes(row.cover_key))
            if cover is None:
                cover = images.placeholder_cover(row.title, row.artist)
            made = {
                "thumbnails": steps.thumbnail_records(bucket, row.job_id, cover, row.missing_sizes)
            }
            if row.missing_waveform and row.peaks:
                made["waveform"] = steps.waveform_record(bucket, row.job_id, row.peaks)
            if row.missing_card:
                made["card"] = steps.card_record(
                    bucket, row.job_id, cover, row.title, row.artist, row.peaks or []
                )
        catalogue.store_images(session, row.track_id, row.job_id, made)
    return BatchDone(len(rows), rows[-1].track_id if rows else after, len(rows) == batch)


def _analysis(
    session: Session, bucket: Bucket, settings: Settings, after: int, batch: int
) -> BatchDone:
    rows = session.execute(SQL["lacking_analysis"], {"after": after, "batch": batch}).all()
    for row in rows:
        with bucket.local_copy(row.object_path) as media:
            features = steps.analysis_step(
                media, settings.analysis_max_seconds, settings.ingest_waveform_columns
            )["features"]
        tempo = features.get("tempo")
        session.execute(
            update(Track)
            .where(Track.id == row.track_id)
            .values(
                audio_features=features,
                mood=features.get("mood"),
                energy_level=round(float(features["energy"]), 4),
                tempo=None if tempo is None else round(float(tempo), 2),
            )
        )
    return BatchDone(len(rows), rows[-1].track_id if rows else after, len(rows) == batch)
