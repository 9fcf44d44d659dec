"""Letters as real PDFs: rendered to PNG and text with poppler, the barcode read with zxing."""

from __future__ import annotations

import csv
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
    assert "LUKASZ ZOLW" in text and "MÜNCHEN 12207" in text  # Ü is Latin-1: kept
    assert "??. ?????? 5" in text and "■" not in text


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
