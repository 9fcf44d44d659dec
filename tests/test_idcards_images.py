"""Reading a card's barcode back from what people hold (SPEC §7): the PDF rendered by poppler,
a 300-dpi scan, phone photos (turned, blurred, small, JPEG) — and hostile files, which get a
clear refusal, never a crash or a hang."""

from __future__ import annotations

import io
import os
import struct
import time
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


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (1, 47_000_000),  # under the pixel cap, yet 1.2 GB and 11 s to decode
        (47_000_000, 1),
        (16_000, 3_000),  # a WebP of this size took 800 MB
        (3_000, 10_001),
        (9_000, 1_000),  # no longer than a scan, but 9 times as long as wide
    ],
)
def test_long_or_thin_images_are_refused_before_decoding(width: int, height: int) -> None:
    """Refused from the header alone: with pixel data the decoder never reaches, the answer
    names the size (a decode attempt would say "damaged or truncated")."""
    with pytest.raises(CannotRead, match=f"is {width} x {height} pixels; at most .* a side"):
        decode.texts_from_bytes(_png_header_only(width, height))


def slow_pdf() -> bytes:
    """A 45 KB PDF one page of which takes pdftoppm far longer than 20 s: 300,000 overlapping
    rectangles, deflated."""
    rectangles = b"".join(b"%d %d 500 500 re f\n" % (i % 97, i % 89) for i in range(1000))
    content = zlib.compress(b"0.5 g\n" + rectangles * 300, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def renderers_of(pid: int) -> list[int]:
    """The pdftoppm processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if name == "pdftoppm" and int(rest.split()[1]) == pid:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("limit", ["deadline", "pdf_seconds"])
def test_a_slow_pdf_is_killed_at_its_limit(limit: str) -> None:
    """A caller's deadline, or the PDF's own limit, ends the render: the renderer is killed
    and the file refused as too slow (the CLI's limit is for the whole file, not a page)."""
    data = slow_pdf()
    assert len(data) < 64 * 1024
    started = time.monotonic()
    with pytest.raises(CannotRead, match=r"took more than 1\.\d s to read"):
        if limit == "deadline":
            decode.texts_from_bytes(data, deadline=started + 1.5)
        else:
            decode.texts_from_bytes(data, pdf_seconds=1.5)
    assert 1.4 < time.monotonic() - started < 10  # generous: the limit held, not 20 s
    assert renderers_of(os.getpid()) == []


def test_turned_copies_stop_at_the_deadline(printed) -> None:
    """Past its deadline a photo is read as given only, not in 14 more turned copies."""
    _, text, page = printed
    blank = page.crop((0, 0, 800, 300))
    started = time.monotonic()
    with pytest.raises(CannotRead, match="took too long"):
        decode.from_image(blank, deadline=started - 1)
    assert decode.from_image(top_card(page), deadline=started - 1) == [text]  # read as given


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


def test_an_image_whose_decoding_would_end_past_the_deadline_is_not_begun() -> None:
    """Pillow cannot stop a decoding once begun: a 47-megapixel PNG begun with a second of the
    budget left answered at 6 s. What decodings of its kind took here says it would not end
    in time, and it is refused at once, to be sent again (the portal's 503)."""
    big = Image.new("RGB", (3000, 2000), "white")
    buffer = io.BytesIO()
    big.save(buffer, "PNG", compress_level=1)
    data = buffer.getvalue()
    assert decode.texts_from_bytes(data) == []  # no deadline: read (and learnt from)
    rate = decode._SECONDS_PER_MEGAPIXEL[("PNG", "RGB")]
    assert rate > 0
    started = time.monotonic()
    with pytest.raises(decode.TooLateToRead):
        decode.texts_from_bytes(data, deadline=started + rate * 6 / 4)  # a quarter of the need
    assert time.monotonic() - started < 1.0  # refused from the header, not decoded first
    assert decode.texts_from_bytes(data, deadline=time.monotonic() + 60) == []
