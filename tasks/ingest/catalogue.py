"""The publish step: a finished job's catalogue rows, written in the caller's transaction.

The artist and the album are found by normalised name (case and runs of spaces ignored)
or created, under an advisory lock per name so two uploads by a new artist make one
artist; then the track, with its audio location, the analysis, and the genre (as tagged,
else inferred from the artist's evidence by the catalogue's genre rule); then one
``track_images`` row per image made. The caller commits these with the job's ``done``, so
a job is published once or not at all.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import Album, Artist, Track, TrackImage
from db.queries import queries
from tasks.analysis.analyse import classify_genre

SQL = queries("tasks.ingest", "ingest")
_DATE = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")


def normalise(name: str) -> str:
    return " ".join(name.split()).lower()


def release_date(tagged: str | None) -> dt.date | None:
    """A tag's date ("2019", "2019-04", "2019-04-01T..."), as a date; None if none reads."""
    match = _DATE.match(tagged or "")
    if match is None:
        return None
    year, month, day = (int(part) if part else 1 for part in match.groups())
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def find_or_create_artist(session: Session, name: str) -> int:
    norm = normalise(name)
    session.execute(SQL["lock_name"], {"key": f"artist:{norm}"})
    found = session.scalar(SQL["find_artist"], {"norm": norm})
    if found is not None:
        return int(found)
    created = insert(Artist).values(name=" ".join(name.split())).returning(Artist.id)
    return int(session.execute(created).scalar_one())


def find_or_create_album(
    session: Session, artist_id: int, title: str, released: dt.date | None
) -> int:
    norm = normalise(title)
    session.execute(SQL["lock_name"], {"key": f"album:{artist_id}:{norm}"})
    found = session.scalar(SQL["find_album"], {"artist_id": artist_id, "norm": norm})
    if found is not None:
        return int(found)
    created = (
        insert(Album)
        .values(artist_id=artist_id, title=" ".join(title.split()), release_date=released)
        .returning(Album.id)
    )
    return int(session.execute(created).scalar_one())


def store_images(session: Session, track_id: int, job_id: int, made: dict[str, Any]) -> int:
    """One ``track_images`` row per image in an images step's record; a row for the same
    kind and size is replaced (a new cover, a re-run). How many rows were written."""
    rows = [
        {"kind": kind, "size": 0, **made[kind]}
        for kind in ("cover", "waveform", "card")
        if kind in made
    ] + [
        {"kind": "thumbnail", "size": int(size), **record}
        for size, record in made.get("thumbnails", {}).items()
    ]
    if not rows:
        return 0
    values = [
        {
            "track_id": track_id,
            "job_id": job_id,
            "kind": row["kind"],
            "size": row["size"],
            "path": row["path"],
            "width": row["width"],
            "height": row["height"],
        }
        for row in rows
    ]
    statement = pg_insert(TrackImage).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["track_id", "kind", "size"],
            set_={
                "path": statement.excluded.path,
                "width": statement.excluded.width,
                "height": statement.excluded.height,
                "job_id": statement.excluded.job_id,
                "created_at": dt.datetime.now(dt.UTC),
            },
        )
    )
    return len(values)


def publish_track(
    session: Session, job_id: int, audio_location: str, outputs: dict[str, Any]
) -> int:
    """The catalogue rows of a finished audio job; the new track's id."""
    probed, analysed = outputs["probe"], outputs["analysis"]
    tags = probed.get("tags") or {}
    features = analysed["features"]
    released = release_date(tags.get("date"))
    artist_id = find_or_create_artist(session, probed["artist"])
    album_id = (
        find_or_create_album(session, artist_id, tags["album"], released)
        if tags.get("album")
        else None
    )
    genre = normalise(tags["genre"]) if tags.get("genre") else None
    tempo = features.get("tempo")
    track_id = int(
        session.execute(
            insert(Track)
            .values(
                title=probed["title"],
                artist_id=artist_id,
                album_id=album_id,
                genre=genre,
                duration_ms=round(float(features["duration_seconds"]) * 1000),
                release_date=released,
                audio_path=audio_location,
                mood=features.get("mood"),
                energy_level=round(float(features["energy"]), 4),
                tempo=None if tempo is None else round(float(tempo), 2),
                audio_features=features,
            )
            .returning(Track.id)
        ).scalar_one()
    )
    if genre is None:
        # The tags had none: the catalogue's rule, from the artist's genres and tracks.
        classify_genre(session, track_id)
    store_images(session, track_id, job_id, outputs.get("images", {}))
    return track_id
