"""Reading a card's barcode back from what people hold (SPEC §7): the PDF rendered by poppler,
a 300-dpi scan, phone photos (turned, blurred, small, JPEG) — and hostile files, which get a
clear refusal, never a crash or a hang."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pdf417gen
import pytest
from PIL import Image
from reportlab.pdfgen.canvas import Canvas

from idcards import decode, signed
from idcards.errors import CannotRead
from tests.helpers.idcards import card_pdf, make_key, photo, png, render_page, sample_card, top_card


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("cards")
    key = make_key(folder)
    card = sample_card()
    path = card_pdf(folder, card, key)
    page = render_page(path, dpi=300)
    return path, signed.sign_card(card, key), page


def test_pdf_and_300_dpi_scan_read_back(printed) -> None:
    path, text, page = printed
    assert decode.texts_from_file(path) == [text]
    assert decode.texts_from_bytes(png(page)) == [text]


@pytest.mark.parametrize(
    ("angle", "blur", "width"),
    [
        (0, 0, 1600),  # a straight photo
        (5, 0, 2000),  # beyond zxing-cpp's own ~3 degrees: needs straightening
        (-11, 0.8, 2000),
        (18, 0, 2400),
        (90, 0, 1800),  # held sideways
        (2, 1.2, 2000),  # blurred
        (-3, 0, 1150),  # low resolution: ~1.7 pixels a module
    ],
)
def test_phone_photos(printed, angle: float, blur: float, width: int) -> None:
    _, text, page = printed
    shot = photo(top_card(page), angle=angle, blur=blur, width=width)
    assert decode.texts_from_bytes(shot) == [text]


def test_blank_photo_has_no_barcode(printed) -> None:
    _, _, page = printed
    blank = page.crop((0, 0, 800, 300))
    assert decode.texts_from_bytes(photo(blank)) == []


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(CannotRead, match="pixels|too large"):
        decode.texts_from_bytes(_png_header_only(100_000, 100_000))


def test_files_that_are_not_images(tmp_path: Path, printed) -> None:
    fake = tmp_path / "card.png"
    fake.write_text("this is a text file\n")
    with pytest.raises(CannotRead, match="not a PNG, JPEG or PDF"):
        decode.texts_from_file(fake)
    _, _, page = printed
    truncated = png(page)[:5000]
    with pytest.raises(CannotRead, match="damaged|truncated"):
        decode.texts_from_bytes(truncated)
    with pytest.raises(CannotRead, match="PDF"):
        decode.texts_from_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    with pytest.raises(CannotRead, match="larger than"):
        decode.texts_from_bytes(b"\x00" * (decode.MAX_UPLOAD_BYTES + 1))


def test_pdf_of_a_thousand_pages_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.pdf"
    canvas = Canvas(str(path))
    for number in range(1000):
        canvas.drawString(72, 72, f"page {number}")
        canvas.showPage()
    canvas.save()
    with pytest.raises(CannotRead, match="1000 pages"):
        decode.texts_from_file(path)


def test_oversized_barcode_text_cannot_be_read(tmp_path: Path) -> None:
    """A PDF-417 symbol far larger than any card: read, then refused as no card."""
    from idcards import barcode
    from idcards.verify import verify_text

    digits = "1" + "7" * 2000
    image = barcode.render(digits, pixels_per_module=2)
    (found,) = decode.from_image(image)
    assert found == digits
    with pytest.raises(CannotRead, match="longer than any card"):
        verify_text(found, lambda kid: None, __import__("datetime").date.today())


def _beside(left: Image.Image, right: Image.Image) -> Image.Image:
    canvas = Image.new("L", (left.width + right.width + 200, max(left.height, right.height)), 255)
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 200, 0))
    return canvas


def test_a_card_photographed_beside_another_pdf417_reads_as_the_card(printed) -> None:
    """A driver's license carries a PDF-417 too: photographed beside the card, the card's text
    is what is read, whichever symbol the decoder meets first; alone, the other symbol's text
    is given, so the check can say that it is not an OLV ID card."""
    _, text, page = printed
    license_text = "@\nANSI 636000090002DL00410278ZV03190008DLDAQT64235789\nDCSSAMPLE\nDACMICHAEL"
    other = pdf417gen.render_image(pdf417gen.encode(license_text, columns=8), scale=4, ratio=3)
    card = top_card(page)
    for shot in (_beside(other.convert("L"), card), _beside(card, other.convert("L"))):
        assert decode.texts_from_bytes(png(shot)) == [text]
    assert decode.texts_from_bytes(png(other.convert("L"))) == [license_text]
