"""Receiving an upload: a ``multipart/form-data`` body streamed to files in a scratch
directory a block at a time, as it arrives.

Starlette's own form parsing (``UploadFile``) reads the whole body before the handler
runs, so its files sit on disk before anyone has looked at a size, and a request that is
refused afterwards has already been written in full. Parsed here instead, the handler's
dependencies (the token) are checked before the first byte is read, and a file is cut off
the moment it passes the size limit. Writes go through a worker thread, one block at a
time, so a slow client holds no thread and a fast one does not stall the event loop.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import anyio.to_thread
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

if TYPE_CHECKING:  # a typing-only name in python-multipart
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELD_BYTES = 1024  # a text field (an id) is a few characters; more is not one
MAX_NAME_BYTES = 255  # a file name longer than most file systems take


class UploadRefusedError(Exception):
    """The body cannot be taken as it is; ``status`` is the HTTP answer it deserves."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_files: int
    file_fields: Collection[str]  # fields that carry files
    text_fields: Collection[str]  # fields that carry a short value


@dataclass
class Received:
    files: dict[str, list[Path]] = field(default_factory=dict)  # field -> files, in order
    fields: dict[str, str] = field(default_factory=dict)
    total_bytes: int = 0


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:  # a client that did not send UTF-8: latin-1 reads any byte
        return raw.decode("latin-1")


def safe_name(raw: str) -> str:
    """The last part of a client's file name, refused if it is no usable name."""
    name = posixpath.basename(raw.replace("\\", "/")).strip()
    if name in ("", ".", "..") or not name.isprintable():
        raise UploadRefusedError(400, f"{raw!r} is not a usable file name")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UploadRefusedError(400, f"file name longer than {MAX_NAME_BYTES} bytes: {name!r}")
    return name


class _Receiver:
    """The parser's callbacks: each part's headers, then its data into its file or its
    value. Called in a worker thread (``parser.write``), so they may write and raise."""

    def __init__(self, scratch: Path, limits: Limits) -> None:
        self.scratch = scratch
        self.limits = limits
        self.received = Received()
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field = ""
        self._name = ""  # the file's name, for messages
        self._out: IO[bytes] | None = None
        self._size = 0
        self._value = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self._disposition, self._field, self._name = b"", "", ""
        self._size, self._value = 0, bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition.decode("latin-1"))
        if b"name" not in options:
            raise UploadRefusedError(400, "a part without a name (Content-Disposition)")
        self._field = _decode(options[b"name"])
        known = [*self.limits.file_fields, *self.limits.text_fields]
        if self._field not in known:
            raise UploadRefusedError(
                400, f"unknown field {self._field!r}; the fields are {', '.join(known)}"
            )
        is_file = b"filename" in options
        if is_file != (self._field in self.limits.file_fields):
            kind = "a file" if self._field in self.limits.file_fields else "a value, not a file"
            raise UploadRefusedError(400, f"{self._field} must be {kind}")
        if not is_file:
            if self._field in self.received.fields:
                raise UploadRefusedError(400, f"{self._field} given twice")
            return
        count = sum(len(paths) for paths in self.received.files.values())
        if count >= self.limits.max_files:
            raise UploadRefusedError(
                413, f"more than {self.limits.max_files} files in one upload: send fewer at once"
            )
        self._name = safe_name(_decode(options[b"filename"]))
        # A folder per file: two files of one name (from different folders) both arrive.
        folder = self.scratch / str(count)
        folder.mkdir()
        path = folder / self._name
        self._out = open(path, "xb")  # noqa: SIM115 (closed at the part's end or by close())
        self.received.files.setdefault(self._field, []).append(path)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._out is None:
            if len(self._value) + end - start > MAX_FIELD_BYTES:
                raise UploadRefusedError(400, f"{self._field}: longer than {MAX_FIELD_BYTES} bytes")
            self._value += data[start:end]
            return
        self._size += end - start
        if self._size > self.limits.max_file_bytes:
            raise UploadRefusedError(
                413,
                f"{self._name} is larger than INGEST_MAX_BYTES ({self.limits.max_file_bytes} "
                "bytes): refused, nothing was kept",
            )
        self._out.write(data[start:end])

    def part_end(self) -> None:
        if self._out is None:
            self.received.fields[self._field] = _decode(bytes(self._value))
            return
        self._out.close()
        self._out = None
        self.received.total_bytes += self._size

    def end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive(
    request_stream: AsyncIterator[bytes], content_type: str, scratch: Path, limits: Limits
) -> Received:
    """The files and values of a multipart body, the files written under ``scratch`` (the
    caller's to remove, whatever happens). ``UploadRefusedError`` for a body that is not
    multipart, is malformed, has an unknown field, or a file over the limit."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadRefusedError(415, "send the files as multipart/form-data")
    receiver = _Receiver(scratch, limits)
    parser = MultipartParser(options[b"boundary"], receiver.callbacks())
    try:
        async for chunk in request_stream:
            if chunk:
                await anyio.to_thread.run_sync(parser.write, chunk)
    except MultipartParseError as exc:
        raise UploadRefusedError(400, f"the multipart body is malformed: {exc}") from None
    except ClientDisconnect:  # nobody to answer; refused all the same, so nothing is kept
        raise UploadRefusedError(400, "the client went away mid-upload") from None
    finally:
        receiver.close()
    if not receiver.ended:
        raise UploadRefusedError(400, "the upload ended before its closing boundary")
    return receiver.received
