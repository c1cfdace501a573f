"""The log file of each process ``automation up`` runs: DATA_DIR/logs/NAME.log.

Every line a child prints goes to its file, appended across restarts, with a line marking
each start; ``automation logs NAME`` shows the end of one and follows it. The terminal
gets a short summary instead of five Celery banners (``--verbose`` adds the stream back).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

LOG_SUFFIX = ".log"
START_MARK = "====="
# How far back from the end ``last_lines`` reads at a time: a few screens of log.
_BLOCK = 64 * 1024


class UnknownLogError(LookupError):
    """No log of that name; the message lists the ones there are."""


def log_dir(data_dir: Path) -> Path:
    return data_dir / "logs"


def log_path(data_dir: Path, name: str) -> Path:
    return log_dir(data_dir) / f"{name}{LOG_SUFFIX}"


def open_for_start(data_dir: Path, name: str, argv: list[str], pid: int) -> IO[str]:
    """``name``'s log, opened to append, with a line that marks this start."""
    path = log_path(data_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Line-buffered: `automation logs` and a crash report see each line as it comes.
    out = path.open("a", encoding="utf-8", errors="replace", buffering=1)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out.write(f"{START_MARK} {name} started {started} (pid {pid}): {' '.join(argv)}\n")
    return out


def available(data_dir: Path) -> dict[str, int]:
    """Each log there is, by name, with its size in bytes."""
    directory = log_dir(data_dir)
    if not directory.is_dir():
        return {}
    return {
        path.name.removesuffix(LOG_SUFFIX): path.stat().st_size
        for path in sorted(directory.glob(f"*{LOG_SUFFIX}"))
        if path.is_file()
    }


def find(data_dir: Path, name: str) -> Path:
    """The log called ``name``, or UnknownLogError naming the valid ones."""
    names = available(data_dir)
    if name in names:
        return log_path(data_dir, name)
    where = log_dir(data_dir)
    if not names:
        raise UnknownLogError(
            f"no log named {name!r}: {where} holds none yet (`automation up` writes them)"
        )
    raise UnknownLogError(f"no log named {name!r} in {where}; valid names: {', '.join(names)}")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def last_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of ``path`` (without their newlines), read from the end:
    the files grow across restarts and are never read whole."""
    if count <= 0:
        return []
    with path.open("rb") as source:
        end = source.seek(0, os.SEEK_END)
        data = b""
        position = end
        # One more newline than lines wanted: the first line read may be cut.
        while position > 0 and data.count(b"\n") <= count:
            step = min(_BLOCK, position)
            position -= step
            source.seek(position)
            data = source.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-count:]


def follow(
    path: Path,
    count: int,
    write: Callable[[str], None],
    stop: Callable[[], bool] = lambda: False,
    interval: float = 0.25,
) -> None:
    """Write the last ``count`` lines of ``path``, then each line appended to it, as
    ``tail -F`` does, until ``stop()``: a file truncated or replaced is read from its
    start."""
    for line in last_lines(path, count):
        write(line + "\n")
    source = path.open("rb")
    try:
        source.seek(0, os.SEEK_END)
        pending = b""
        while not stop():
            chunk = source.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    write(raw.decode("utf-8", errors="replace") + "\n")
                continue
            try:
                current = path.stat()
            except FileNotFoundError:
                current = None  # being replaced: look again next time round
            if current is not None and (
                current.st_ino != os.fstat(source.fileno()).st_ino
                or current.st_size < source.tell()
            ):
                source.close()
                source = path.open("rb")
                pending = b""
                continue
            time.sleep(interval)
    finally:
        source.close()
