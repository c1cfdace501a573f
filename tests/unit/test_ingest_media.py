"""The ingest pipeline's media steps (tasks/ingest) on real files the tests write.

WAV, FLAC, Ogg and MP3 through libsndfile, tagged with mutagen, PNG and JPEG covers
through Pillow, and the damaged ones an upload form meets: truncated, empty, a text file
renamed ``.wav``, too large. No database, Redis or settings: the steps take values.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from tasks.analysis.analyse import MOODS
from tasks.ingest.analysis import analyse, waveform_envelope
from tasks.ingest.images import (
    PLACEHOLDER_SIZE,
    choose_cover,
    placeholder_cover,
    share_card,
    thumbnails,
    waveform_png,
)
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


def test_an_id3v1_genre_number_reads_as_its_name(tmp_path: Path) -> None:
    path = audio.tag(tone_file(tmp_path / "old.wav"), genre="(17)")

    assert probe(path, LIMIT).tags.genre == "Rock"


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


# ---- analysis ----------------------------------------------------------------------------


def test_a_120_bpm_click_track_measures_120_within_2(tmp_path: Path) -> None:
    path = audio.write(tmp_path / "clicks.flac", audio.stereo(audio.click_track(120)))

    result = analyse(path, max_seconds=120, columns=100)

    assert result.features.tempo == pytest.approx(120, abs=2)


def test_the_analysis_reports_energy_tempo_key_mode_mood_loudness_and_duration(
    tmp_path: Path,
) -> None:
    path = audio.write(tmp_path / "chord.ogg", audio.chord(261.63, 329.63, 392.00))

    as_json = analyse(path, max_seconds=120, columns=100).as_json()

    assert (as_json["key"], as_json["mode"]) == ("C", "major")
    assert as_json["mood"] in MOODS and 0 <= as_json["energy"] <= 1
    assert as_json["duration_seconds"] == pytest.approx(10.0, abs=0.01)
    assert -30 < as_json["loudness_db"] < as_json["peak_db"] < 0


def test_the_features_come_from_the_middle_excerpt_and_the_duration_from_the_whole_file(
    tmp_path: Path,
) -> None:
    path = audio.write(tmp_path / "long.wav", audio.click_track(120, duration=30))

    result = analyse(path, max_seconds=8, columns=100)

    assert result.features.duration_seconds == pytest.approx(8.0, abs=0.01)
    assert result.envelope.duration_seconds == pytest.approx(30.0, abs=0.01)


def test_the_envelope_has_one_peak_per_column_following_the_level(tmp_path: Path) -> None:
    # Quiet for the first half, four times louder for the second.
    signal = np.concatenate([audio.sine(440, 0.2, 5), audio.sine(440, 0.8, 5)])
    path = audio.write(tmp_path / "steps.wav", audio.stereo(signal))

    peaks = waveform_envelope(path, columns=10).peaks

    assert len(peaks) == 10
    assert peaks[:5] == pytest.approx([0.2] * 5, abs=0.01)
    assert peaks[5:] == pytest.approx([0.8] * 5, abs=0.01)


def test_the_envelope_does_not_depend_on_the_block_size(tmp_path: Path) -> None:
    path = audio.write(tmp_path / "noise.flac", audio.noise(0.2, duration=7))

    # Blocks that straddle column boundaries in every possible way, against one big block.
    small = waveform_envelope(path, columns=333, block_frames=1000)
    whole = waveform_envelope(path, columns=333, block_frames=10**7)

    assert small == whole


def test_a_file_that_stops_decoding_partway_is_refused_by_the_streaming_pass(
    tmp_path: Path,
) -> None:
    path = audio.write(tmp_path / "chopped.flac", audio.noise(0.2, duration=10))
    data = path.read_bytes()
    # A hole in the middle, the end intact: the probe's tail check passes, decoding fails.
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes(20_000) + data[middle + 20_000 :])

    with pytest.raises(TruncatedFileError):
        waveform_envelope(path, columns=100)


# The budget is 400 MB of peak worker memory for a 60-minute 44.1 kHz stereo file;
# the 60-minute figure is the benchmark's to measure (bench/, with the pipeline). Here a
# 10-minute file, written to disk in blocks, in a fresh interpreter so that the high-water
# mark of the process (ru_maxrss) is this analysis's alone and not an earlier test's.
MEASURE_PEAK_GROWTH = """
import resource, sys
from pathlib import Path
from tasks.ingest.analysis import analyse, waveform_envelope
path, what = Path(sys.argv[1]), sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if what == "envelope":
    waveform_envelope(path, columns=1800)
else:
    analyse(path, max_seconds=120, columns=1800)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def peak_growth_mb(path: Path, what: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK_GROWTH, str(path), what],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    return float(done.stdout.split()[-1])


@pytest.fixture(scope="module")
def ten_minute_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 106 MB of 16-bit stereo on disk; decoded to float32 whole it would be 212 MB.
    return audio.write_long_wav(tmp_path_factory.mktemp("long") / "ten.wav", 600)


def test_the_streaming_pass_over_a_ten_minute_file_grows_memory_by_under_50_mb(
    ten_minute_wav: Path,
) -> None:
    # Measured at 0: one 64k-frame block (0.5 MB) fits in what the imports already took.
    assert peak_growth_mb(ten_minute_wav, "envelope") < 50


def test_analysing_a_ten_minute_file_grows_memory_by_under_100_mb(ten_minute_wav: Path) -> None:
    # Measured at 7 MB past the imports' own high-water mark (bench.analysis_memory, peak
    # against peak: about 30 MB, the 21 MB mono excerpt and a block of spectra). Before the
    # features streamed their spectra (tasks/analysis/audio_features: extract_features) it
    # was 190-265 MB, the whole spectrogram of the excerpt and its copies: this bound is
    # below that. Reading the file whole would add 212 MB of float32 samples for these ten
    # minutes, 1.3 GB for sixty.
    assert peak_growth_mb(ten_minute_wav, "analysis") < 100


# ---- images ------------------------------------------------------------------------------


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_thumbnails_open_at_exactly_the_requested_sizes() -> None:
    # A landscape JPEG: the thumbnails are square all the same.
    cover = choose_cover(None, audio.image_bytes("JPEG", (800, 600), (20, 90, 160)), "T", "A")

    made = thumbnails(cover.image, [64, 256, 640])

    assert {size: opened(data).size for size, data in made.items()} == {
        64: (64, 64),
        256: (256, 256),
        640: (640, 640),
    }
    assert {opened(data).format for data in made.values()} == {"JPEG"}


def test_embedded_art_becomes_the_cover(tmp_path: Path) -> None:
    path = audio.tag(tone_file(tmp_path / "art.flac"), cover=COVER)

    cover = choose_cover(read_metadata(path).cover, None, "T", "A")

    assert cover.source == "embedded"
    assert cover.image.getpixel((10, 10)) == (200, 40, 40)


def test_an_uploaded_image_wins_over_embedded_art() -> None:
    uploaded = audio.image_bytes("PNG", (300, 300), (0, 0, 255))

    cover = choose_cover(COVER, uploaded, "T", "A")

    assert cover.source == "uploaded" and cover.image.getpixel((10, 10)) == (0, 0, 255)


def test_a_placeholder_is_made_when_there_is_no_art() -> None:
    cover = choose_cover(None, None, "Night Drive", "The Examples")

    assert cover.source == "placeholder"
    assert cover.image.size == (PLACEHOLDER_SIZE, PLACEHOLDER_SIZE)
    colours = cover.image.getcolors(maxcolors=PLACEHOLDER_SIZE**2)
    assert colours is not None and len(colours) > 2  # a gradient with initials, not a blank


def test_damaged_embedded_art_falls_back_to_the_placeholder() -> None:
    cover = choose_cover(COVER[: len(COVER) // 2], None, "T", "A")

    assert cover.source == "placeholder"


def test_the_placeholder_is_the_same_for_a_track_and_differs_between_tracks() -> None:
    def png(title: str, artist: str) -> bytes:
        return thumbnails(placeholder_cover(title, artist), [256])[256]

    assert png("Night Drive", "The Examples") == png("Night Drive", "The Examples")
    assert png("Night Drive", "The Examples") != png("Day Drive", "The Examples")


def test_the_waveform_is_a_png_of_the_requested_size(tmp_path: Path) -> None:
    path = audio.write(tmp_path / "clicks.wav", audio.click_track(120))
    peaks = waveform_envelope(path, columns=1800).peaks

    image = opened(waveform_png(peaks, 1800, 140))

    assert (image.format, image.size) == ("PNG", (1800, 140))


def test_the_share_card_is_a_1200_by_630_png() -> None:
    cover = choose_cover(COVER, None, "Night Drive", "The Examples")
    peaks = [0.1, 0.6, 0.3, 0.9] * 100

    image = opened(share_card(cover.image, "Night Drive", "The Examples", peaks))

    assert (image.format, image.size) == ("PNG", (1200, 630))


def test_a_title_too_long_for_the_card_still_makes_a_card() -> None:
    cover = choose_cover(None, None, "T", "A")

    image = opened(share_card(cover.image, "Interlude " * 40, "A", [0.5] * 10))

    assert image.size == (1200, 630)
