"""The ingest watcher's decisions, without a thread or a database: which names are files
yet, when a file has settled, and which files make one job. Taking them (the rename
claim, the rows) is in tests/integration/test_ingest_watcher.py; the thread in a real
worker in tests/system/test_ingest_worker.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.ingest.jobs import Upload
from tasks.ingest.watcher import (
    Sighting,
    groups,
    is_temporary,
    observe,
    scan,
    settled,
    takeable,
)


@pytest.mark.parametrize(
    "name",
    [".hidden.wav", "song.wav.part", "song.flac.tmp", "song.mp3.crdownload", "a/.partial.ogg"],
)
def test_temporary_and_hidden_names_are_not_files_yet(name: str) -> None:
    assert is_temporary(name)


@pytest.mark.parametrize("name", ["song.wav", "a/b/song.FLAC", "part.wav", "tmp/song.ogg"])
def test_ordinary_names_are_files(name: str) -> None:
    assert not is_temporary(name)


def test_a_file_is_settled_once_unchanged_for_the_settle_time() -> None:
    first = observe({}, {"a.wav": (100, 5)}, now=10.0)
    again = observe(first, {"a.wav": (100, 5)}, now=10.9)
    later = observe(again, {"a.wav": (100, 5)}, now=11.0)

    assert settled(again, 10.9, 1.0) == set()
    assert settled(later, 11.0, 1.0) == {"a.wav"}


def test_a_file_still_growing_starts_its_settle_time_again() -> None:
    first = observe({}, {"a.wav": (100, 5)}, now=10.0)
    grown = observe(first, {"a.wav": (200, 6)}, now=10.8)

    assert settled(grown, 11.5, 1.0) == set()
    assert settled(grown, 11.8, 1.0) == {"a.wav"}


def test_a_file_touched_without_growing_starts_its_settle_time_again() -> None:
    first = observe({}, {"a.wav": (100, 5)}, now=10.0)
    touched = observe(first, {"a.wav": (100, 7)}, now=10.8)

    assert touched["a.wav"] == Sighting(100, 7, 10.8)


def test_a_file_no_longer_there_is_forgotten() -> None:
    first = observe({}, {"a.wav": (100, 5), "b.wav": (1, 1)}, now=10.0)

    assert set(observe(first, {"b.wav": (1, 1)}, now=11.0)) == {"b.wav"}


def test_a_settle_time_of_zero_takes_a_file_when_first_seen() -> None:
    assert settled(observe({}, {"a.wav": (1, 1)}, now=3.0), 3.0, 0.0) == {"a.wav"}


def test_an_audio_file_and_its_same_named_image_in_one_folder_are_one_job() -> None:
    assert groups(["x/song.flac", "x/song.jpg", "x/other.wav"]) == [
        Upload("x/other.wav"),
        Upload("x/song.flac", "x/song.jpg"),
    ]


def test_an_image_in_another_folder_is_not_the_cover() -> None:
    assert groups(["a/song.flac", "b/song.jpg"]) == [Upload("a/song.flac"), Upload("b/song.jpg")]


def test_an_image_waits_while_its_audio_file_is_still_arriving() -> None:
    present = ["song.flac", "song.jpg"]

    assert takeable(present, ready={"song.jpg"}) == []
    assert takeable(present, ready={"song.flac", "song.jpg"}) == ["song.flac", "song.jpg"]


def test_an_image_waits_while_its_audio_file_is_written_under_a_temporary_name() -> None:
    assert takeable(["song.flac.part", "song.jpg"], ready={"song.jpg"}) == []


def test_an_image_with_no_audio_file_of_its_name_is_taken_alone() -> None:
    assert takeable(["cover.jpg", "song.flac"], ready={"cover.jpg"}) == ["cover.jpg"]


def test_a_scan_finds_files_in_subfolders_but_not_temporary_or_dot_folder_ones(
    tmp_path: Path,
) -> None:
    (tmp_path / "album" / ".sync").mkdir(parents=True)
    for name in ["top.wav", "album/one.flac", "album/two.ogg.part", "album/.sync/three.wav"]:
        (tmp_path / name).write_bytes(b"x" * 3)
    os.utime(tmp_path / "top.wav", ns=(1, 2_000))

    candidates, present = scan(tmp_path)

    assert candidates == {
        "top.wav": (3, 2_000),
        "album/one.flac": (3, (tmp_path / "album/one.flac").stat().st_mtime_ns),
    }
    assert present == {"top.wav", "album/one.flac", "album/two.ogg.part"}


def test_a_scan_of_a_vanished_drop_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "incoming")
