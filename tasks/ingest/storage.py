"""The ingest bucket: where uploads arrive and the images made from them are written.

Any fsspec file system: a local directory by default (DATA_DIR/ingest), an S3 bucket
(``s3://bucket/prefix``, with s3fs installed) or anything else fsspec speaks, by URL
alone. Objects are named by keys relative to the bucket's root (``uploads/...``,
``media/<job>/...``); a key never climbs out of it.

Errors say what kind they are: a missing object is the job's problem
(``ObjectMissingError``, permanent: no retry brings it back), anything else the storage
raises is the storage's (``StorageUnavailableError``, transient: retried with backoff).
"""

from __future__ import annotations

import contextlib
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from worker.errors import PermanentError
from worker.settings import Settings

INCOMING = "incoming"  # the local bucket's drop folder, watched (tasks.ingest.watcher)
UPLOADS = "uploads"  # where submitted files are kept, one folder per upload
MEDIA = "media"  # what the pipeline makes, one folder per job
COPY_BLOCK = 1 << 20


class ObjectMissingError(PermanentError):
    """The job names an object the bucket does not have."""


class StorageUnavailableError(Exception):
    """The storage failed (unreachable, full, refused): a later attempt may succeed."""


def check_key(key: str) -> str:
    """``key`` as a clean relative key; ValueError for one that is empty, absolute or
    climbs out of the bucket."""
    clean = posixpath.normpath(key.strip()) if key and key.strip() else ""
    if not clean or clean.startswith(("/", "..")) or clean == ".":
        raise ValueError(f"{key!r} is not an object key in the bucket")
    return clean


class Bucket:
    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Bucket({self.url!r})"

    def path(self, key: str) -> str:
        """The file system's path of ``key``."""
        return f"{self.root}/{check_key(key)}"

    def location(self, key: str) -> str:
        """Where ``key`` is for a reader outside fsspec: a local path, or the object's URL."""
        path = self.path(key)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    # -- reading -------------------------------------------------------------------------

    def size(self, key: str) -> int:
        with self._errors(key):
            return int(self.fs.size(self.path(key)))

    def exists(self, key: str) -> bool:
        with self._errors(key):
            return bool(self.fs.exists(self.path(key)))

    def read_bytes(self, key: str) -> bytes:
        with self._errors(key):
            return bytes(self.fs.cat_file(self.path(key)))

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file holding the object: the object itself in a local bucket, else a
        temporary copy (decoders need a seekable file), removed afterwards."""
        if self.is_local:
            path = Path(self.path(key))
            with self._errors(key):
                if not path.is_file():
                    raise FileNotFoundError(str(path))
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="ingest-") as scratch:
            local = Path(scratch) / posixpath.basename(key)
            with self._errors(key):
                self.fs.get_file(self.path(key), str(local))
            yield local

    # -- writing -------------------------------------------------------------------------

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` as ``key``, whole or not at all (a reader never sees half)."""
        path = self.path(key)
        with self._errors(key):
            if not self.is_local:
                self.fs.pipe_file(path, data)
                return
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
            partial.write_bytes(data)
            partial.replace(target)

    def put_file(self, local: Path, key: str) -> None:
        """Copy a local file in as ``key``, in blocks, whole or not at all."""
        path = self.path(key)
        with self._errors(key):
            if not self.is_local:
                self.fs.put_file(str(local), path)
                return
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
            with open(local, "rb") as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, COPY_BLOCK)
            partial.replace(target)

    def move(self, key: str, new_key: str) -> None:
        """Rename an object (atomic in a local bucket)."""
        with self._errors(key):
            if self.is_local:
                target = Path(self.path(new_key))
                target.parent.mkdir(parents=True, exist_ok=True)
                Path(self.path(key)).rename(target)
            else:
                self.fs.mv(self.path(key), self.path(new_key))

    def delete(self, key: str) -> None:
        with self._errors(key), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            raise ObjectMissingError(f"the bucket has no object {key!r}") from exc
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise StorageUnavailableError(
                f"storage {self.url}: {type(exc).__name__}: {exc} (object {key!r})"
            ) from exc


def upload_key(name: str, now_date: str, token: str | None = None) -> str:
    """A fresh key for an uploaded file: ``uploads/<date>/<token>/<name>``, so two files
    of one name never meet and the name stays readable."""
    base = posixpath.basename(name.replace("\\", "/")) or "upload"
    return f"{UPLOADS}/{now_date}/{token or uuid.uuid4().hex}/{base}"


def media_key(job_id: int, name: str) -> str:
    """Where the pipeline writes what it makes for a job: the same key on every attempt,
    so a retry overwrites rather than adds."""
    return f"{MEDIA}/{job_id}/{name}"


def open_bucket(settings: Settings) -> Bucket:
    """The bucket INGEST_URL names (DATA_DIR/ingest by default)."""
    return Bucket(settings.ingest_bucket_url)
