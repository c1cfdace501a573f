"""The ingest pipeline's media steps (tasks/ingest) on real files the tests write.

WAV, FLAC, Ogg and MP3 through libsndfile, tagged with mutagen, PNG and JPEG covers
through Pillow, and the damaged ones an upload form meets: truncated, empty, a text file
renamed ``.wav``, too large. No database, Redis or settings: the steps take values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile

from tasks.ingest.probe import (
    EmptyFileError,
    FileTooLargeError,
    IngestRefusedError,
    NotMediaError,
    ProbeResult,
    TruncatedFileError,
    probe,
)
from tasks.ingest.tags import read_metadata
from tests import audio
from worker.errors import PermanentError

LIMIT = 50_000_000
FIELDS = {
    "title": "Night Drive",
    "artist": "The Examples",
    "album": "Test Patterns",
    "genre": "Synthwave",
    "date": "2019-04-01",
    "tracknumber": "3/12",
}
NEEDS_MP3 = pytest.mark.skipif(
    "MP3" not in soundfile.available_formats(),
    reason="the installed libsndfile was built without MP3 (it needs libsndfile >= 1.1 "
    "with LAME and mpg123)",
)
FORMATS = [
    pytest.param(".wav", "WAV", id="wav"),
    pytest.param(".flac", "FLAC", id="flac"),
    pytest.param(".ogg", "OGG", id="ogg"),
    pytest.param(".mp3", "MP3", id="mp3", marks=NEEDS_MP3),
]
COVER = audio.image_bytes("PNG", (300, 300), (200, 40, 40))


def tone_file(path: Path, seconds: float = 3.0) -> Path:
    return audio.write(path, audio.stereo(audio.sine(440, 0.3, seconds)), audio.RATE)


def refusal(path: Path, max_bytes: int = LIMIT) -> IngestRefusedError:
    with pytest.raises(IngestRefusedError) as raised:
        probe(path, max_bytes)
    # The job's error column shows the reason as it is: one line, naming the file.
    assert isinstance(raised.value, PermanentError)
    assert "\n" not in str(raised.value) and path.name in str(raised.value)
    return raised.value


# ---- probe: what a good file is ----------------------------------------------------------


@pytest.mark.parametrize(("suffix", "file_format"), FORMATS)
def test_each_audio_format_probes_with_its_duration_channels_rate_and_tags(
    tmp_path: Path, suffix: str, file_format: str
) -> None:
    path = audio.tag(tone_file(tmp_path / f"song{suffix}"), **FIELDS)

    result = probe(path, LIMIT)

    assert (result.kind, result.format) == ("audio", file_format)
    assert result.duration_seconds == pytest.approx(3.0, abs=0.01)
    assert (result.channels, result.sample_rate) == (2, audio.RATE)
    assert result.size_bytes == path.stat().st_size
    tags = result.tags
    assert (tags.title, tags.artist, tags.album, tags.genre) == (
        "Night Drive",
        "The Examples",
        "Test Patterns",
        "Synthwave",
    )
    assert (tags.year, tags.track_number) == (2019, 3)
    assert result.has_cover_art is False


def test_an_untagged_file_probes_with_empty_tags(tmp_path: Path) -> None:
    result = probe(tone_file(tmp_path / "bare.flac"), LIMIT)

    assert result.tags.as_json() == dict.fromkeys(result.tags.as_json())
    assert result.has_cover_art is False


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param(".flac", id="flac-picture"),
        pytest.param(".ogg", id="vorbis-metadata-block-picture"),
        pytest.param(".wav", id="id3-apic-in-wav"),
        pytest.param(".mp3", id="id3-apic-in-mp3", marks=NEEDS_MP3),
    ],
)
def test_embedded_cover_art_is_found_in_each_carrier(tmp_path: Path, suffix: str) -> None:
    path = audio.tag(tone_file(tmp_path / f"art{suffix}"), cover=COVER, title="With Art")

    assert probe(path, LIMIT).has_cover_art is True
    assert read_metadata(path).cover == COVER


@pytest.mark.parametrize(("image_format", "size"), [("PNG", (300, 300)), ("JPEG", (800, 600))])
def test_a_cover_image_probes_as_an_image_with_its_size(
    tmp_path: Path, image_format: str, size: tuple[int, int]
) -> None:
    path = tmp_path / f"cover.{image_format.lower()}"
    path.write_bytes(audio.image_bytes(image_format, size, (20, 90, 160)))

    result = probe(path, LIMIT)

    assert (result.kind, result.format, (result.width, result.height)) == (
        "image",
        image_format,
        size,
    )
    assert result.duration_seconds is None


# ---- probe: what is refused, and why -----------------------------------------------------


def test_a_text_file_renamed_wav_is_refused_as_not_media(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("These are my lyrics, not a song.\n" * 50)

    refused = refusal(path)

    assert isinstance(refused, NotMediaError)
    assert "neither audio nor an image" in str(refused)


def test_a_zero_length_file_is_refused_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.flac"
    path.touch()

    refused = refusal(path)

    assert isinstance(refused, EmptyFileError) and "empty" in str(refused)


def test_a_file_over_the_size_limit_is_refused_with_both_sizes(tmp_path: Path) -> None:
    path = tone_file(tmp_path / "big.wav")
    size = path.stat().st_size

    refused = refusal(path, max_bytes=size - 1)

    assert isinstance(refused, FileTooLargeError)
    assert f"{size:,}" in str(refused) and f"{size - 1:,}" in str(refused)


def test_a_file_exactly_at_the_size_limit_is_accepted(tmp_path: Path) -> None:
    path = tone_file(tmp_path / "edge.wav")

    assert probe(path, max_bytes=path.stat().st_size).kind == "audio"


def cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_a_wav_cut_in_half_is_refused_as_truncated(tmp_path: Path) -> None:
    # libsndfile alone would play the half that is left; the RIFF header says otherwise.
    path = cut(tone_file(tmp_path / "half.wav"), 0.5)

    refused = refusal(path)

    assert isinstance(refused, TruncatedFileError) and "truncated" in str(refused)


def test_a_flac_with_its_end_chopped_off_is_refused_as_truncated(tmp_path: Path) -> None:
    path = cut(tone_file(tmp_path / "chopped.flac", seconds=10), 0.8)

    assert isinstance(refusal(path), TruncatedFileError)


def test_an_ogg_cut_in_half_is_refused_as_truncated(tmp_path: Path) -> None:
    path = cut(tone_file(tmp_path / "half.ogg", seconds=10), 0.5)

    assert isinstance(refusal(path), TruncatedFileError)


def test_a_png_cut_short_is_refused_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "cover.png"
    # Noise, so the pixel data is most of the file and the cut falls inside it.
    path.write_bytes(audio.image_bytes("PNG", (400, 400), (1, 2, 3), noise=True))
    cut(path, 0.6)

    refused = refusal(path)

    assert isinstance(refused, TruncatedFileError) and "damaged PNG" in str(refused)


def test_a_result_serialises_to_plain_values(tmp_path: Path) -> None:
    result = probe(audio.tag(tone_file(tmp_path / "s.flac"), title="T"), LIMIT)

    as_json = result.as_json()

    assert isinstance(result, ProbeResult)
    assert as_json["tags"]["title"] == "T" and as_json["kind"] == "audio"
