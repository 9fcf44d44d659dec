"""Letters as real PDFs: rendered to PNG and text with poppler, the barcode read with zxing."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from enforcement import letters
from enforcement.casework import LETTERS

pytestmark = pytest.mark.skipif(
    shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None,
    reason="poppler-utils (pdftoppm, pdftotext) not installed; scripts/test installs it",
)


def sample(kind: str, doc_id: str | None = None) -> letters.Letter:
    return letters.Letter(
        doc_id=doc_id or letters.new_doc_id(),
        kind=kind,
        mailed=date(2026, 4, 10),
        name="MARY-ANN O CONNOR",
        address1="12 MAIN ST",
        address2="APT 4",
        city="ALBANY",
        zip="12207",
        plate="ABC1234",
        plate_state="NY",
        vin="1HGCM82633A004352",
        vehicle="2003 HONDA",
        matter_date=date(2026, 3, 1),
        respond_by=date(2026, 5, 10),
        insurer="12345",
    )


def pdf_text(path: Path) -> str:
    out = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True, text=True
    )
    return out.stdout


def barcodes(path: Path, tmp_path: Path) -> list[str]:
    import zxingcpp
    from PIL import Image

    prefix = tmp_path / path.stem
    subprocess.run(["pdftoppm", "-png", "-r", "150", str(path), str(prefix)], check=True)
    pages = sorted(tmp_path.glob(f"{path.stem}*.png"))
    assert pages, "pdftoppm wrote no page"
    found: list[str] = []
    for page in pages:
        with Image.open(page) as image:
            found += [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.Code128]
    return found


def test_doc_ids_are_ten_digits_with_a_check_digit_and_distinct() -> None:
    ids = {letters.new_doc_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(letters.is_doc_id(i) and i[0] != "0" for i in ids)
    one = next(iter(ids))
    typo = one[:3] + str((int(one[3]) + 1) % 10) + one[4:]
    assert not letters.is_doc_id(typo)
    assert not letters.is_doc_id("12345")
    assert not letters.is_doc_id("١٢٣٤٥٦٧٨٩٠")  # digits, but not ASCII


@pytest.mark.parametrize("kind", sorted(set(LETTERS.values())))
def test_each_letter_prints_who_what_when_and_a_readable_barcode(kind: str, tmp_path: Path) -> None:
    letter = sample(kind)
    path = tmp_path / letters.file_name(letter)
    letters.render(letter, path)
    assert path.read_bytes().startswith(b"%PDF-")
    text = pdf_text(path)
    for expected in (
        "MARY-ANN O CONNOR",
        "12 MAIN ST",
        "ALBANY 12207",
        "1HGCM82633A004352",
        "ABC1234",
        "2003 HONDA",
        f"Document ID {letter.doc_id}",
        "What to do",
    ):
        assert expected in text, (kind, expected)
    if kind in ("first_inquiry", "second_inquiry", "niv", "no_insurance_activity"):
        assert "Respond by: 2026-05-10" in text
    assert barcodes(path, tmp_path) == [letter.doc_id]


BEYOND_LATIN_1 = {"name": "ŁUKASZ ŻÓŁW", "address1": "УЛ. ЛЕНИНА 5", "city": "MÜNCHEN"}


@pytest.mark.skipif(
    letters.unicode_font() is None,
    reason="DejaVu Sans (Debian's fonts-dejavu-core) not installed; scripts/test installs it",
)
def test_names_beyond_latin_1_print_in_an_embedded_font(tmp_path: Path) -> None:
    plain, wide = sample("first_inquiry"), replace(sample("first_inquiry"), **BEYOND_LATIN_1)
    for letter in (plain, wide):
        letters.render(letter, tmp_path / f"{letter.doc_id}.pdf")
    text = pdf_text(tmp_path / f"{wide.doc_id}.pdf")
    assert "ŁUKASZ ŻÓŁW" in text and "УЛ. ЛЕНИНА 5" in text and "MÜNCHEN 12207" in text
    assert "■" not in text
    # A script the font has no glyphs for is spelled, a "?" a character, not drawn as boxes.
    korean = replace(wide, name="김철수 王小明")
    letters.render(korean, tmp_path / "korean.pdf")
    assert "??? ???" in pdf_text(tmp_path / "korean.pdf")
    # Embedded in the letter that needs it alone.
    assert b"DejaVu" in (tmp_path / f"{wide.doc_id}.pdf").read_bytes()
    assert b"DejaVu" not in (tmp_path / f"{plain.doc_id}.pdf").read_bytes()


def test_without_the_font_names_are_spelled_in_latin_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(letters, "UNICODE_FONT_FILES", (tmp_path / "no-such-font.ttf",))
    letters.unicode_font.cache_clear()
    try:
        letter = replace(sample("first_inquiry"), **BEYOND_LATIN_1)
        letters.render(letter, tmp_path / "l.pdf")
        text = pdf_text(tmp_path / "l.pdf")
    finally:
        letters.unicode_font.cache_clear()
    assert "LUKASZ ZÓLW" in text and "MÜNCHEN 12207" in text  # Ó and Ü are Latin-1: kept
    assert "??. ?????? 5" in text and "■" not in text


LONG = {
    "name": "MARIA DE LOS ANGELES GUADALUPE FERNANDEZ-RODRIGUEZ DE LA CRUZ Y SANTISTEBAN",
    "address1": "12345 NORTH WEST MARTIN LUTHER KING JR BOULEVARD APARTMENT 1204 BUILDING C",
    "address2": "C/O " + "X" * 96,  # one word wider than the room: broken inside it
}


def test_a_long_address_stays_clear_of_the_barcode_and_on_the_page(tmp_path: Path) -> None:
    """Names and address lines of up to 100 characters (what the import takes) were drawn
    across the Document ID's barcode and past the page's edge."""
    letter = replace(sample("first_inquiry"), **LONG)
    path = tmp_path / "long.pdf"
    letters.render(letter, path)
    words = _words(path)
    printed = " ".join(text for text, *_ in words)
    for part in ("GUADALUPE", "SANTISTEBAN", "BOULEVARD", "BUILDING C", "ALBANY 12207"):
        assert part in printed, part
    assert printed.count("X") == 96  # every character of the long word, over several lines
    assert barcodes(path, tmp_path) == [letter.doc_id]
    bar_left, bar_top, bar_bottom = _barcode_box(tmp_path, path)
    page_right = 612 - 72
    for text, x_min, y_min, x_max, y_max in words:
        assert x_max <= page_right + 1, (text, x_max)
        beside_the_barcode = y_max > bar_top and y_min < bar_bottom
        if beside_the_barcode and x_min < bar_left:
            assert x_max < bar_left, (text, x_max, bar_left)


def _words(path: Path) -> list[tuple[str, float, float, float, float]]:
    """Each word pdftotext finds, with its box in points from the page's top left."""
    out = subprocess.run(
        ["pdftotext", "-bbox", str(path), "-"], capture_output=True, check=True, text=True
    ).stdout
    found = re.findall(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>',
        out,
    )
    return [(w, float(a), float(b), float(c), float(d)) for a, b, c, d, w in found]


def _barcode_box(tmp_path: Path, path: Path) -> tuple[float, float, float]:
    """The barcode's left edge, top and bottom in points, as zxing finds it on the page."""
    import zxingcpp
    from PIL import Image

    dpi = 150
    subprocess.run(
        ["pdftoppm", "-png", "-r", str(dpi), str(path), str(tmp_path / "box")], check=True
    )
    [page] = sorted(tmp_path.glob("box*.png"))
    with Image.open(page) as image:
        [found] = [r for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.Code128]
    corners = [found.position.top_left, found.position.bottom_left]
    corners += [found.position.top_right, found.position.bottom_right]
    points = 72 / dpi
    return (
        min(c.x for c in corners) * points,
        min(c.y for c in corners) * points,
        max(c.y for c in corners) * points,
    )


def test_a_day_of_letters_and_its_mailing_list(tmp_path: Path) -> None:
    batch = [sample("first_inquiry"), sample("suspension"), sample("niv")]
    hostile = letters.Letter(
        **{**batch[0].__dict__, "doc_id": letters.new_doc_id(), "name": "=CMD()"}
    )
    csv_path, count = letters.write_day([*batch, hostile], tmp_path / "out")
    assert count == 4 and csv_path.name == "mailing.csv"
    with csv_path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["doc_id"] for r in rows] == [x.doc_id for x in [*batch, hostile]]
    for row in rows:
        assert (tmp_path / "out" / row["file"]).is_file()
    assert rows[-1]["name"] == "'=CMD()"  # a spreadsheet opens it as text
    assert not list((tmp_path / "out").glob(".*part"))
