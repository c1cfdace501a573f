"""The local bucket's storage trigger: a file dropped into ``incoming/`` becomes a job.

Every worker that consumes the ingest queue runs one watcher thread in its main process
while the bucket is a local directory (an object store has its own event notifications,
and nothing here polls one). The thread wakes on the file system's events (watchfiles:
inotify, FSEvents, kqueue), and also scans ``incoming/`` when it starts (files dropped
while no worker ran) and every ``RESCAN_SECONDS`` (an event lost to an overflow or a
restart of the watch).

A file is taken once its size and modification time have not changed for
INGEST_WATCH_SETTLE_SECONDS: a copy in progress is not a file yet. Names starting with
``.`` or ending in ``.part``, ``.tmp`` or ``.crdownload`` are never taken, so an uploader
can write under such a name and rename when done; an image waits while an audio file of
its name is still arriving (under its own name or a temporary one), so the two become one
job with a cover. Files in subfolders are taken too, their folders left in place (an
uploader may be about to write into one).

Taking a file: its job row is inserted, the file renamed from ``incoming/`` to the job's
fresh ``uploads/<date>/<token>/<name>`` key, and the row committed. With several workers
watching one directory (compose's workers share a volume) the rename is the claim: it is
atomic on one file system, so exactly one watcher moves a file, and the others' renames
fail with FileNotFoundError and roll their rows back. A failed commit puts the file back
in ``incoming/``. A file that cannot be moved is logged and left; nothing a file does
stops the thread, and a database outage only delays it (retried with backoff).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import posixpath
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
from celery import Celery, signals
from sqlalchemy import update
from sqlalchemy.orm import Session

from db.models import IngestJob
from db.session import session_scope
from tasks.ingest.jobs import Upload, create_job, pair
from tasks.ingest.storage import INCOMING, Bucket, ObjectMissingError, open_bucket, upload_key
from worker.queues import home_queue
from worker.settings import Settings, get_settings

log = logging.getLogger(__name__)

TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload")
RESCAN_SECONDS = 30.0
# The watch yields at least this often, so a file settles on time without another event.
TICK_SECONDS = 0.5
# Events are grouped over this long: a copy's thousands of writes make one wake-up.
DEBOUNCE_MS = 300
VIA = "watcher"


# -- which files are ready ---------------------------------------------------------------


def is_temporary(name: str) -> bool:
    """A name an uploader writes under before renaming it: never taken."""
    base = posixpath.basename(name)
    return base.startswith(".") or base.lower().endswith(TEMPORARY_SUFFIXES)


def final_name(name: str) -> str:
    """The name a temporary file will have once renamed (``song.flac.part`` ->
    ``song.flac``), for holding back its cover; a dot file's is its own."""
    lowered = name.lower()
    for suffix in TEMPORARY_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Sighting:
    """A file as last seen, and since when (the watcher's clock) it has looked so."""

    size: int
    mtime_ns: int
    since: float


def observe(
    previous: Mapping[str, Sighting], current: Mapping[str, tuple[int, int]], now: float
) -> dict[str, Sighting]:
    """The sightings after a scan finding ``current`` (name -> size, mtime in ns): a file
    unchanged keeps its ``since``, a new or changed one starts again at ``now``, a file
    no longer there is forgotten."""
    sightings = {}
    for name, (size, mtime_ns) in current.items():
        seen = previous.get(name)
        unchanged = seen is not None and (seen.size, seen.mtime_ns) == (size, mtime_ns)
        sightings[name] = seen if unchanged and seen is not None else Sighting(size, mtime_ns, now)
    return sightings


def settled(sightings: Mapping[str, Sighting], now: float, settle_seconds: float) -> set[str]:
    """The files unchanged for ``settle_seconds`` up to ``now``."""
    return {name for name, seen in sightings.items() if now - seen.since >= settle_seconds}


def groups(names: Iterable[str]) -> list[Upload]:
    """The jobs a set of names (relative to ``incoming/``) makes: ``jobs.pair`` within each
    folder, so a cover pairs only with the audio file beside it."""
    folders: dict[str, list[str]] = {}
    for name in sorted(names):
        folders.setdefault(posixpath.dirname(name), []).append(name)
    return [upload for folder in sorted(folders) for upload in pair(folders[folder])]


def takeable(present: Iterable[str], ready: set[str]) -> list[str]:
    """The ready files whose whole job is ready: an image waits while the audio file it is
    the cover of is still arriving (unsettled, or under a temporary name)."""
    arriving = {
        final_name(name) for name in present if not posixpath.basename(name).startswith(".")
    }
    taken = []
    for upload in groups(arriving | ready):
        members = [upload.media, *([upload.cover] if upload.cover else [])]
        if all(member in ready for member in members):
            taken.extend(members)
    return sorted(taken)


def scan(incoming: Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """Under ``incoming/``: the candidate files (name relative to it -> size, mtime in ns)
    and every name present, temporary ones included. Dot folders are skipped. Raises
    FileNotFoundError if ``incoming/`` itself is gone (the watch must be made again)."""
    if not incoming.is_dir():
        raise FileNotFoundError(f"{incoming} is not a directory")
    candidates: dict[str, tuple[int, int]] = {}
    present: set[str] = set()
    for folder, subfolders, files in os.walk(incoming):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        relative = Path(folder).relative_to(incoming).as_posix()
        for base in files:
            name = base if relative == "." else f"{relative}/{base}"
            present.add(name)
            if is_temporary(name):
                continue
            try:
                found = os.stat(os.path.join(folder, base))
            except OSError:  # gone (taken by another watcher) or unreadable: next scan
                continue
            if stat.S_ISREG(found.st_mode):
                candidates[name] = (found.st_size, found.st_mtime_ns)
    return candidates, present


# -- taking files ------------------------------------------------------------------------


@dataclass
class Taken:
    """What a ``take`` did: the jobs it made and the files it left in ``incoming/``."""

    jobs: list[int] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # taken by another watcher, or removed
    refused: list[str] = field(default_factory=list)  # could not be moved: logged, left


def take(
    session: Session,
    bucket: Bucket,
    names: Iterable[str],
    today: dt.date,
    *,
    max_attempts: int | None = None,
) -> Taken:
    """Make jobs of files in ``incoming/`` (names relative to it), one transaction each:
    the row inserted, the file(s) renamed to the job's key, the row committed.

    A media file another watcher took first (its rename fails) rolls its row back and is
    skipped; so is one that cannot be moved. A database error rolls back, puts anything
    moved back in ``incoming/`` and is raised, for the caller to retry later.
    """
    attempts = max_attempts if max_attempts is not None else get_settings().ingest_max_attempts
    folder = today.isoformat().replace("-", "/")
    result = Taken()
    for upload in groups(names):
        token = uuid.uuid4().hex
        media_key = upload_key(upload.media, folder, token)
        cover_key = upload_key(upload.cover, folder, token) if upload.cover else None
        moved: list[tuple[str, str]] = []
        try:
            job_id = create_job(
                session, media_key, cover_path=cover_key, via=VIA, max_attempts=attempts
            )
            if not _claim(bucket, upload.media, media_key, result):
                session.rollback()
                _forget(bucket, media_key)
                continue
            moved.append((upload.media, media_key))
            if upload.cover is not None and cover_key is not None:
                if _claim(bucket, upload.cover, cover_key, result):
                    moved.append((upload.cover, cover_key))
                else:
                    # The audio is ours: it goes on alone (embedded art or a placeholder).
                    session.execute(
                        update(IngestJob).where(IngestJob.id == job_id).values(cover_path=None)
                    )
            session.commit()
        except Exception:
            session.rollback()
            for name, key in moved:
                _put_back(bucket, key, name)
            raise
        result.jobs.append(job_id)
        log.info(
            "ingest watcher: job %s from incoming/%s%s",
            job_id,
            upload.media,
            f" with cover {upload.cover}" if len(moved) > 1 else "",
        )
    return result


def _claim(bucket: Bucket, name: str, key: str, result: Taken) -> bool:
    """Rename ``incoming/<name>`` to ``key``: True if this watcher moved it."""
    try:
        bucket.move(f"{INCOMING}/{name}", key)
    except ObjectMissingError:
        # Another watcher's rename came first (or the uploader took it back): not ours.
        log.debug("ingest watcher: incoming/%s is gone", name)
        result.gone.append(name)
        return False
    except Exception as exc:
        log.warning("ingest watcher: incoming/%s stays where it is: %s", name, exc)
        result.refused.append(name)
        return False
    return True


def _put_back(bucket: Bucket, key: str, name: str) -> None:
    """Best effort: the file back in ``incoming/`` for the next pass, unless something of
    its name arrived meanwhile (a rename would replace it)."""
    try:
        if bucket.exists(f"{INCOMING}/{name}"):
            log.error("ingest watcher: incoming/%s was replaced; its old file is %s", name, key)
            return
        bucket.move(key, f"{INCOMING}/{name}")
        _forget(bucket, key)
    except Exception:
        log.exception("ingest watcher: could not put %s back as incoming/%s", key, name)


def _forget(bucket: Bucket, key: str) -> None:
    """Remove the job's upload folder if it holds nothing (the claim was lost)."""
    with contextlib.suppress(OSError, ValueError):
        os.rmdir(bucket.path(posixpath.dirname(key)))


# -- the thread ------------------------------------------------------------------------


class Watcher(threading.Thread):
    """Watches one local bucket's ``incoming/`` until ``stop``: a thin loop over ``scan``,
    ``observe``, ``settled``, ``takeable`` and ``take``."""

    def __init__(
        self,
        bucket: Bucket,
        settle_seconds: float,
        *,
        max_attempts: int,
        session_factory: Callable[[], AbstractContextManager[Session]] = session_scope,
        rescan_seconds: float = RESCAN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
    ) -> None:
        super().__init__(name="ingest-watcher", daemon=True)
        self.bucket = bucket
        self.incoming = Path(bucket.path(INCOMING))
        self.settle_seconds = settle_seconds
        self.max_attempts = max_attempts
        self.session_factory = session_factory
        self.rescan_seconds = rescan_seconds
        self.clock = clock
        self.today = today
        self.stopping = threading.Event()
        self.sightings: dict[str, Sighting] = {}
        # Files that could not be moved, as they were: tried again when they change or at
        # the next full scan, not on every tick.
        self.refused: dict[str, Sighting] = {}
        self.next_full_scan = -math.inf

    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                self.incoming.mkdir(parents=True, exist_ok=True)
                # The first pass is a full scan on the watch's first yield, once the watch
                # is in place: a file dropped before it is found by the scan, one dropped
                # after by its event (a scan before the watch would miss those between).
                self.next_full_scan = -math.inf
                for changes in watchfiles.watch(
                    self.incoming,
                    watch_filter=None,
                    debounce=DEBOUNCE_MS,
                    rust_timeout=int(TICK_SECONDS * 1000),
                    yield_on_timeout=True,
                    stop_event=self.stopping,
                ):
                    self.step(changed=bool(changes))
                    backoff = 1.0
                if not self.stopping.is_set():
                    raise RuntimeError(f"the watch of {self.incoming} ended")
            except Exception:
                log.exception("ingest watcher: retrying in %.0f s", backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def step(self, *, changed: bool) -> list[int]:
        """One pass: scan if anything changed, something is settling or a full scan is
        due, then take what is ready; the jobs made."""
        now = self.clock()
        full = now >= self.next_full_scan
        waiting = any(name not in self.refused for name in self.sightings)
        if not (changed or waiting or full):
            return []
        if full:
            self.next_full_scan = now + self.rescan_seconds
            self.refused.clear()
        candidates, present = scan(self.incoming)
        self.sightings = observe(self.sightings, candidates, now)
        self.refused = {
            name: seen for name, seen in self.refused.items() if self.sightings.get(name) == seen
        }
        ready = settled(self.sightings, now, self.settle_seconds) - set(self.refused)
        names = takeable(present, ready)
        if not names:
            return []
        with self.session_factory() as session:
            taken = take(session, self.bucket, names, self.today(), max_attempts=self.max_attempts)
        for name in names:
            if name in taken.refused:
                self.refused[name] = self.sightings[name]
            else:  # taken, here or by another watcher
                del self.sightings[name]
        return taken.jobs

    def stop(self) -> None:
        self.stopping.set()


# The worker process's one watcher (signals give no other place to keep it).
_running: dict[str, Watcher] = {}


def watcher_for(settings: Settings) -> Watcher | None:
    """A watcher of the bucket INGEST_URL names, or None if it is not a local directory."""
    bucket = open_bucket(settings)
    if not bucket.is_local:
        return None
    return Watcher(
        bucket, settings.ingest_watch_settle_seconds, max_attempts=settings.ingest_max_attempts
    )


def install(app: Celery) -> None:
    """Run a watcher in each worker of ``app`` that consumes the ingest queue, while the
    bucket is local; stopped with the worker."""
    queue = home_queue("ingest.process")

    def start(sender: Any, **_: Any) -> None:
        if sender.app is not app or "watcher" in _running:
            return
        if queue not in {q.name for q in sender.task_consumer.queues}:
            return
        watcher = watcher_for(get_settings())
        if watcher is None:
            log.info("ingest watcher: the bucket is not local; nothing to watch")
            return
        watcher.start()
        _running["watcher"] = watcher
        log.info("ingest watcher: watching %s", watcher.incoming)

    def stop(**_: Any) -> None:
        watcher = _running.pop("watcher", None)
        if watcher is not None:
            watcher.stop()
            watcher.join(timeout=10)

    # Strong references: the handlers are closures, which a weak one would lose at once.
    signals.worker_ready.connect(start, weak=False)
    signals.worker_shutdown.connect(stop, weak=False)
