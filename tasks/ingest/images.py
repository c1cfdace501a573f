"""The ingest pipeline's images: the waveform, the cover thumbnails and the share card.

Everything here takes bytes or Pillow images and returns encoded bytes; where they are
written is the storage layer's business. The choices, each for a reason:

- the waveform and the share card are PNG: flat colours and text, which PNG keeps sharp
  and small; the thumbnails are JPEG: cover art is photographic, where a 640-pixel PNG is
  ten times the size of a JPEG that looks the same;
- thumbnails are square, the cover centre-cropped (album art is square by convention; a
  non-square upload loses its edges rather than gaining bars);
- a track without art gets a placeholder derived only from its title and artist, so the
  same track always gets the same picture, and a re-run makes identical bytes;
- text uses Pillow's bundled default font, so no font file has to be installed.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from tasks.ingest.probe import MAX_IMAGE_PIXELS

CoverSource = Literal["embedded", "uploaded", "placeholder"]

CARD_SIZE = (1200, 630)  # the Open Graph image size link previews expect
PLACEHOLDER_SIZE = 1024  # the largest thumbnail anyone configures, drawn once
JPEG_QUALITY = 85
WAVEFORM_COLOUR = (255, 255, 255, 255)
BACKGROUND = (0, 0, 0, 0)


@dataclass(frozen=True)
class Cover:
    image: Image.Image  # RGB, square
    source: CoverSource


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


# ---- waveform ----------------------------------------------------------------------------


def _resample(peaks: Sequence[float], width: int) -> list[float]:
    """``width`` values from ``peaks``: the maximum of the peaks each pixel covers."""
    if not peaks:
        return [0.0] * width
    count = len(peaks)
    values = []
    for x in range(width):
        first = x * count // width
        last = max((x + 1) * count // width, first + 1)
        values.append(max(peaks[first:last]))
    return values


def draw_waveform(
    image: Image.Image,
    peaks: Sequence[float],
    box: tuple[int, int, int, int],
    colour: tuple[int, int, int, int] = WAVEFORM_COLOUR,
) -> None:
    """Draws the envelope into ``box`` (left, top, right, bottom), mirrored about its middle."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    middle = top + height / 2
    draw = ImageDraw.Draw(image)
    for x, peak in enumerate(_resample(peaks, width)):
        # At least one pixel, so silence still shows where the track is.
        half = max(min(max(peak, 0.0), 1.0) * height / 2, 0.5)
        draw.line([(left + x, middle - half), (left + x, middle + half - 1)], fill=colour)


def waveform_png(
    peaks: Sequence[float],
    width: int,
    height: int,
    colour: tuple[int, int, int, int] = WAVEFORM_COLOUR,
) -> bytes:
    """The waveform on a transparent background, so any page colour shows through."""
    image = Image.new("RGBA", (width, height), BACKGROUND)
    draw_waveform(image, peaks, (0, 0, width, height), colour)
    return _png(image)


# ---- covers ------------------------------------------------------------------------------


def decode_image(data: bytes) -> Image.Image | None:
    """An RGB image from encoded bytes; None when they are not a whole, sane image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return None
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
        return None
    # A phone photo's orientation is a tag, not its pixels.
    upright = ImageOps.exif_transpose(image)
    if upright.mode in ("RGBA", "LA", "P"):
        # Transparent art on white, as a browser would show it on a light page.
        rgba = upright.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return upright.convert("RGB")


def _colours(title: str, artist: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(f"{artist}\x00{title}".encode()).digest()
    # Mid-range channels: no near-black or near-white pair that would hide the initials.
    first = tuple(60 + b % 140 for b in digest[0:3])
    second = tuple(60 + b % 140 for b in digest[3:6])
    return (first[0], first[1], first[2]), (second[0], second[1], second[2])


def initials(title: str, artist: str) -> str:
    words = [w for w in (artist or title).split() if w[:1].isalnum()]
    return "".join(w[0] for w in words[:2]).upper() or "?"


def placeholder_cover(title: str, artist: str, size: int = PLACEHOLDER_SIZE) -> Image.Image:
    """A diagonal gradient in two colours from the title and artist, with their initials."""
    start, end = _colours(title, artist)
    # Pillow's 256-pixel ramp, top to bottom, blended with itself turned: corner to corner.
    vertical = Image.linear_gradient("L")
    ramp = Image.blend(vertical, vertical.transpose(Image.Transpose.ROTATE_90), 0.5)
    ramp = ramp.resize((size, size), Image.Resampling.BICUBIC)
    image = ImageOps.colorize(ramp, start, end)
    draw = ImageDraw.Draw(image)
    draw.text(
        (size / 2, size / 2),
        initials(title, artist),
        font=_font(max(size * 2 // 5, 8)),
        fill=(255, 255, 255),
        anchor="mm",
    )
    return image


def choose_cover(embedded: bytes | None, uploaded: bytes | None, title: str, artist: str) -> Cover:
    """The uploaded image, else the embedded art, else a placeholder, whichever decodes first.

    An upload wins because someone chose it for this track; damaged embedded art falls
    back to the placeholder rather than failing a job whose audio is fine.
    """
    candidates: tuple[tuple[bytes | None, CoverSource], ...] = (
        (uploaded, "uploaded"),
        (embedded, "embedded"),
    )
    for data, source in candidates:
        if data:
            image = decode_image(data)
            if image is not None:
                side = min(image.size)
                return Cover(ImageOps.fit(image, (side, side)), source)
    return Cover(placeholder_cover(title, artist), "placeholder")


def thumbnails(cover: Image.Image, sizes: Iterable[int]) -> dict[int, bytes]:
    """JPEG thumbnails, one per size, each exactly ``size`` x ``size`` pixels."""
    result = {}
    for size in sorted(set(sizes)):
        if size < 1:
            raise ValueError(f"a thumbnail size must be positive, not {size}")
        square = ImageOps.fit(cover, (size, size), Image.Resampling.LANCZOS)
        result[size] = _jpeg(square)
    return result


# ---- share card --------------------------------------------------------------------------


def _fit_text(
    draw: ImageDraw.ImageDraw, text: str, size: int, max_width: int
) -> tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    """The text at the largest font size down to half ``size`` that fits, else cut with '…'."""
    for candidate in range(size, size // 2 - 1, -4):
        font = _font(candidate)
        if draw.textlength(text, font=font) <= max_width:
            return text, font
    font = _font(size // 2)
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text.rstrip() + "…", font


def share_card(
    cover: Image.Image,
    title: str,
    artist: str,
    peaks: Sequence[float],
    size: tuple[int, int] = CARD_SIZE,
) -> bytes:
    """A PNG card: the cover on the left, title, artist and waveform on the right."""
    width, height = size
    margin = max(height // 14, 8)
    art = height - 2 * margin
    # The background is the cover's own average colour, darkened so white text reads.
    average = cover.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert isinstance(average, tuple)
    background = tuple(int(c * 0.35) for c in average[:3])
    card = Image.new("RGB", size, (background[0], background[1], background[2]))
    card.paste(
        ImageOps.fit(cover.convert("RGB"), (art, art), Image.Resampling.LANCZOS), (margin, margin)
    )

    left = 2 * margin + art
    text_width = width - left - margin
    draw = ImageDraw.Draw(card)
    if text_width > 0:
        title_text, title_font = _fit_text(draw, title or "Untitled", height // 9, text_width)
        artist_text, artist_font = _fit_text(
            draw, artist or "Unknown artist", height // 14, text_width
        )
        draw.text((left, margin), title_text, font=title_font, fill=(255, 255, 255))
        draw.text(
            (left, margin + height // 9 + margin // 2),
            artist_text,
            font=artist_font,
            fill=(210, 210, 210),
        )
        wave_top = height // 2
        draw_waveform(card, peaks, (left, wave_top, width - margin, height - margin))
    return _png(card)
