"""Barcode text from a photo, a scan or a PDF, with hostile input kept in bounds.

zxing-cpp 3.1 reads PDF-417 only up to about 2-3 degrees of skew, and a phone photo is rarely
that straight: when the image as given yields nothing, copies turned a few degrees at a time
either way are tried (:data:`ANGLES`). Bounds, checked before any decoding: the upload's size,
the image's pixel count, sides and shape (read from its header; ``PIL.Image.MAX_IMAGE_PIXELS``
is set to the same pixel bound), the PDF's page count, and a time limit on reading a PDF
(``pdftoppm``, from poppler-utils, runs in its own process so that a hostile file cannot take
this one down, and is killed at the limit). A caller with a deadline of its own (the portal)
passes it: the PDF's limit shrinks to it, and turned copies stop being tried past it.
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import zxingcpp
from PIL import Image, ImageOps, UnidentifiedImageError

from idcards import armour
from idcards.errors import CannotRead

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 48_000_000  # a 48-megapixel phone camera; a decompression bomb is far larger
# The pixel count alone does not bound memory: Pillow's decoders keep per-row (and per-column)
# state, so 1 x 47,000,000 pixels took 1.2 GB. A phone photo is 8000 x 6000 at most and a
# 300-dpi scan of a Letter or A4 page about 2550 x 3500; nothing real is longer or thinner.
MAX_SIDE = 10_000
MAX_ASPECT = 8  # long side over short side; a card is 1.6, a page 1.4, a panorama 4
MAX_PDF_PAGES = 10
PDF_SECONDS = 20.0  # for the whole PDF; a card's page renders in well under a second
PDF_LONG_SIDE_PX = 2400  # ~220 dpi on a Letter page: a 0.38 mm module is 3.3 pixels
WORK_LONG_SIDE_PX = 2400  # larger images are reduced first: faster, still 2+ px a module
ANGLES = (4, -4, 8, -8, 12, -12, 16, -16, 20, -20, 25, -25, 30, -30)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
PDF417_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.PDF417)

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class DecodeError(CannotRead):
    """Input no barcode can be read from; the message says why, for the person holding it."""


class TooLateToRead(CannotRead):
    """The image's decoding, which cannot be stopped once begun, would end past the caller's
    deadline: not begun (the portal answers 503, try again)."""


# Seconds an image's decoding takes per megapixel decoded, by format and pixel mode, learned
# from this process's own decodings (a 16-bit RGBA PNG takes several times an 8-bit JPEG's);
# before any, a cautious guess. Pillow's decoders cannot be interrupted: a 47-megapixel PNG
# begun with a second of a request's budget left answered at 6 s.
_SECONDS_PER_MEGAPIXEL: dict[tuple[str, str], float] = {}
FIRST_GUESS_SECONDS_PER_MEGAPIXEL = 0.06


def texts_from_bytes(
    data: bytes, *, deadline: float | None = None, pdf_seconds: float = PDF_SECONDS
) -> list[str]:
    """The PDF-417 texts found in an image or PDF file's bytes (empty: none found).

    ``deadline`` (``time.monotonic()``) ends the reading of a PDF or of a photo's turned copies
    with a :class:`DecodeError`; a PDF gets at most ``pdf_seconds`` in any case."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise DecodeError(f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    if data.startswith(b"%PDF-"):
        return _from_pdf(data, deadline, pdf_seconds)
    return from_image(_open_image(data, deadline), deadline=deadline)


def texts_from_file(path: Path) -> list[str]:
    with path.open("rb") as handle:
        data = handle.read(MAX_UPLOAD_BYTES + 1)
    return texts_from_bytes(data)


def _load_by(image: Image.Image, deadline: float | None) -> None:
    """``image.load()``, refused with :class:`TooLateToRead` when it would end past
    ``deadline`` by what decodings of its kind have taken here."""
    megapixels = image.size[0] * image.size[1] / 1e6
    kind = (image.format or "", image.mode)
    rate = _SECONDS_PER_MEGAPIXEL.get(kind, FIRST_GUESS_SECONDS_PER_MEGAPIXEL)
    started = time.monotonic()
    if deadline is not None and started + rate * megapixels > deadline:
        if kind in _SECONDS_PER_MEGAPIXEL:
            # A refusal teaches nothing, so the figure eases: one slow decoding on a busy
            # machine must not refuse every large image of its kind from then on.
            _SECONDS_PER_MEGAPIXEL[kind] = 0.9 * rate
        raise TooLateToRead("no time left to read this image: try again in a few seconds")
    image.load()
    if megapixels >= 1:
        took = (time.monotonic() - started) / megapixels
        seen = _SECONDS_PER_MEGAPIXEL.get(kind)
        # Leaning to the slower figure: a guess too low is a late answer, too high a retry.
        _SECONDS_PER_MEGAPIXEL[kind] = took if seen is None else max(took, 0.7 * seen + 0.3 * took)


def _open_image(data: bytes, deadline: float | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = opened.size
            if not _fits(width, height):
                raise DecodeError(
                    f"the image is {width} x {height} pixels; at most {MAX_PIXELS:,} are read, "
                    f"{MAX_SIDE:,} a side, the long side at most {MAX_ASPECT} times the short"
                )
            factor = -(-max(width, height) // WORK_LONG_SIDE_PX)
            if opened.format == "JPEG" and factor > 1:
                # Decode a big photo at a half or a quarter of its size, in grey, straight from
                # the JPEG's DCT: several times faster than decoding it whole and reducing it.
                opened.draft("L", (-(-width // factor), -(-height // factor)))
            _load_by(opened, deadline)
            image = ImageOps.exif_transpose(opened) or opened
            return image.convert("L")
    except DecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError("not a PNG, JPEG or PDF file, or too large to read") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError):
        raise DecodeError("the image is damaged or truncated") from None


def _fits(width: int, height: int) -> bool:
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        return False
    return max(width, height) <= MAX_SIDE and max(width, height) <= MAX_ASPECT * min(width, height)


def from_image(image: Image.Image, *, deadline: float | None = None) -> list[str]:
    """The texts of the PDF-417 symbols in ``image``: those of OLV ID cards only, when there
    are any. A text that is not a card's is another barcode in the picture (a driver's
    license beside the card) or, rarely, a misread of a turned symbol that zxing-cpp still
    takes as valid (seen at 18 degrees): the turned copies are tried until a card's text is
    found. When none is, what the first copy that showed any symbol read is given."""
    image = image.convert("L")
    factor = -(-max(image.size) // WORK_LONG_SIDE_PX)
    if factor > 1:  # a box filter by a whole factor: a tenth of the time of a resampling filter
        image = image.reduce(factor)
    first: list[str] = []
    for number, copy in enumerate(_turned_copies(image)):
        if number and deadline is not None and time.monotonic() > deadline:
            if first:
                return first
            raise DecodeError("the photo took too long to read: photograph the card flat")
        found = _read(copy)
        cards = [text for text in found if _is_card(text)]
        if cards:
            return cards
        first = first or found
    return first


def _turned_copies(image: Image.Image) -> Iterator[Image.Image]:
    """``image`` as given, then turned by each of :data:`ANGLES` (made one at a time)."""
    yield image
    for angle in ANGLES:
        yield image.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=255)


def _is_card(text: str) -> bool:
    try:
        armour.decode(text)
    except armour.ArmourError:
        return False
    return True


def _read(image: Image.Image) -> list[str]:
    results = zxingcpp.read_barcodes(image, formats=PDF417_ONLY)
    seen: list[str] = []
    for result in results:
        if result.valid and result.text not in seen:
            seen.append(result.text)
    return seen


_PAGES = re.compile(rb"^Pages:\s+(\d+)\s*$", re.MULTILINE)


def _from_pdf(data: bytes, deadline: float | None, seconds: float) -> list[str]:
    # One limit for the whole file, not one a page: ten pages of a few seconds each would
    # otherwise hold a decoder ten times as long.
    start = time.monotonic()
    until = start + seconds if deadline is None else min(start + seconds, deadline)
    seconds = until - start
    with tempfile.TemporaryDirectory(prefix="olv-card-") as folder:
        source = Path(folder, "card.pdf")
        source.write_bytes(data)
        info = _run(["pdfinfo", str(source)], until, seconds)
        match = _PAGES.search(info)
        if match is None:
            raise DecodeError("the PDF cannot be read")
        pages = int(match.group(1))
        if pages > MAX_PDF_PAGES:
            raise DecodeError(
                f"the PDF has {pages} pages; give a file of at most {MAX_PDF_PAGES} "
                "(the page with the card)"
            )
        for page in range(1, pages + 1):
            prefix = Path(folder, f"page{page}")
            _run(
                [
                    "pdftoppm",
                    "-f",
                    str(page),
                    "-l",
                    str(page),
                    "-gray",
                    "-png",
                    "-scale-to",
                    str(PDF_LONG_SIDE_PX),
                    "-singlefile",
                    str(source),
                    str(prefix),
                ],
                until,
                seconds,
            )
            rendered = prefix.with_suffix(".png")
            if not rendered.is_file():
                continue
            with Image.open(rendered, formats=("PNG",)) as image:
                found = from_image(image, deadline=deadline)
            if found:
                return found
    return []


def _run(command: list[str], until: float, seconds: float) -> bytes:
    """``command``'s output; past ``until`` it is killed (``subprocess.run`` kills and reaps
    the child on its timeout) and the PDF refused."""
    too_long = DecodeError(
        f"the PDF took more than {max(seconds, 0):.1f} s to read: give a photo or scan of the card"
    )
    left = until - time.monotonic()
    if left <= 0:
        raise too_long
    try:
        done = subprocess.run(command, capture_output=True, timeout=left, check=False)
    except FileNotFoundError:
        raise DecodeError(
            f"reading PDFs needs {command[0]} (Debian package poppler-utils)"
        ) from None
    except subprocess.TimeoutExpired:
        raise too_long from None
    if done.returncode != 0:
        raise DecodeError("the PDF is damaged or not a PDF")
    return done.stdout
