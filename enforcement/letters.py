"""Letters to registrants as PDF, one file each, and the day's ``mailing.csv`` for the printer.

Every letter carries a 10-digit Document ID, printed and as a Code 128 barcode, so that mail
returned to the state, a registrant calling in, and the public status page all lead back to
the one activity that sent it. The ID's last digit is a Luhn check digit: a mistyped ID on the
status page is refused before any look-up.
"""

from __future__ import annotations

import csv
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from portal.csv_cells import cell

if TYPE_CHECKING:
    from reportlab.pdfgen import canvas

DOC_ID_DIGITS = 10
# Names and addresses come from the DMV's records, in any script. Helvetica (a PDF's own font,
# nothing embedded) prints Windows-1252 alone; a line beyond it was drawn as black boxes. Such
# a line is drawn in DejaVu Sans, embedded (for those lines only: embedding a font costs every
# letter that carries it), from Debian's fonts-dejavu-core; where that is not installed, it is
# spelled in Latin letters (accents dropped) and a character left over prints as "?".
ADDRESS_MIN_SIZE = 8.0  # points: the smallest the address is printed before it wraps
ADDRESS_GAP = 12.0  # points between the address and the barcode
UNICODE_FONT_FILES = (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),)
_UNICODE_FONT = "OLV-Unicode"
MAILING_FIELDS = (
    "doc_id",
    "kind",
    "mailed",
    "name",
    "address1",
    "address2",
    "city",
    "zip",
    "file",
)


def new_doc_id() -> str:
    """A random Document ID (first digit not 0), unguessable from its neighbours'."""
    body = str(secrets.randbelow(9 * 10 ** (DOC_ID_DIGITS - 2)) + 10 ** (DOC_ID_DIGITS - 2))
    return body + _luhn_digit(body)


def is_doc_id(value: str) -> bool:
    return (
        len(value) == DOC_ID_DIGITS
        and value.isascii()
        and value.isdigit()
        and _luhn_digit(value[:-1]) == value[-1]
    )


def _luhn_digit(digits: str) -> str:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: these sit right before the check digit
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return str((10 - total % 10) % 10)


@dataclass(frozen=True)
class Letter:
    """Everything one letter says."""

    doc_id: str
    kind: str  # a value of enforcement.casework.LETTERS
    mailed: date
    name: str
    address1: str
    address2: str
    city: str
    zip: str
    plate: str
    plate_state: str
    vin: str
    vehicle: str  # "2019 TOYOTA", may be empty
    matter_date: date  # the cancellation's effective date, the proof date, …
    respond_by: date | None
    insurer: str = ""  # the insurer asked to verify, for the NIV letter


@dataclass(frozen=True)
class _Text:
    title: str
    body: tuple[str, ...]
    todo: tuple[str, ...]


def _text(letter: Letter) -> _Text:
    on = letter.matter_date.isoformat()
    by = letter.respond_by.isoformat() if letter.respond_by else ""
    proof = (
        "Have your insurance company report your coverage to the state electronically, or "
        "enter your insurance card on the state's insurance page, quoting the Document ID."
    )
    texts = {
        "first_inquiry": _Text(
            "INSURANCE INQUIRY - FIRST NOTICE",
            (
                f"An insurance company reported that the liability insurance of this vehicle "
                f"ended on {on}. Our records show no other insurance since that date.",
            ),
            (proof, f"Do this by {by}. Otherwise the registration will be suspended."),
        ),
        "second_inquiry": _Text(
            "INSURANCE INQUIRY - SECOND NOTICE",
            (
                "The proof of insurance you sent in answer to our first notice could not be "
                f"accepted. Our records still show no insurance since {on}.",
            ),
            (proof, f"Do this by {by}. Otherwise the registration will be suspended."),
        ),
        "niv": _Text(
            "NO INSURER VERIFICATION",
            (
                f"You gave proof of insurance on {on}. We asked the insurance company"
                f"{' (' + letter.insurer + ')' if letter.insurer else ''} to confirm it, and it "
                "has not answered.",
            ),
            (
                "Contact your insurance company and ask it to confirm your coverage to the "
                "state electronically, quoting the Document ID.",
                f"Do this by {by}. Otherwise the registration will be suspended.",
            ),
        ),
        "no_insurance_activity": _Text(
            "NO INSURANCE ON FILE",
            (
                f"Since {on} no insurance company has reported insurance for this vehicle to "
                "the state.",
            ),
            (proof, f"Do this by {by}. Otherwise the registration will be suspended."),
        ),
        "suspension": _Text(
            "ORDER OF SUSPENSION - REGISTRATION",
            (
                "We have no proof that this vehicle has been insured since "
                f"{on}. The registration is suspended from {letter.mailed.isoformat()} until "
                "proof of insurance is on file.",
            ),
            (
                "Do not drive this vehicle. Surrender the plates, or have your insurance "
                "company report your coverage to the state electronically.",
            ),
        ),
        "rescission": _Text(
            "NOTICE OF RESCISSION",
            (
                f"The insurance company withdrew the cancellation dated {on}. The inquiry "
                "letter we sent about it is cancelled.",
            ),
            ("Nothing more is needed from you.",),
        ),
        "restoration": _Text(
            "NOTICE OF RESTORATION",
            (
                f"Insurance for this vehicle is now on file. The suspension ordered after "
                f"{on} has ended from {letter.mailed.isoformat()}.",
            ),
            ("Nothing more is needed from you about this matter.",),
        ),
    }
    return texts[letter.kind]


def render(letter: Letter, path: Path) -> None:
    """Write the letter as a one-page PDF."""
    # reportlab is imported here, not above: the portal's pages need this module's Document ID
    # check, and a portal start (made often) would otherwise load reportlab, a tenth of its CPU.
    from reportlab.graphics.barcode import code128
    from reportlab.lib.pagesizes import LETTER
    from reportlab.lib.units import inch
    from reportlab.pdfgen import canvas

    text = _text(letter)
    pdf = canvas.Canvas(str(path), pagesize=LETTER, pageCompression=1)
    pdf.setTitle(f"{text.title} {letter.doc_id}")
    width, height = LETTER
    left = inch
    y = height - inch

    pdf.setFont("Helvetica-Bold", 11)
    pdf.drawString(left, y, "DEPARTMENT OF MOTOR VEHICLES - INSURANCE ENFORCEMENT")
    pdf.setFont("Helvetica", 10)
    pdf.drawRightString(width - inch, y, f"Mailed {letter.mailed.isoformat()}")
    y -= 0.45 * inch
    barcode = code128.Code128(
        letter.doc_id, barHeight=0.5 * inch, barWidth=1.2, quiet=True, lquiet=12, rquiet=12
    )
    barcode_left = width - inch - barcode.width
    # The address keeps to the left of the barcode and its Document ID, whatever its length.
    room = barcode_left - ADDRESS_GAP - left
    for line in (letter.name, letter.address1, letter.address2, f"{letter.city} {letter.zip}"):
        if line.strip():
            y = _address_line(pdf, left, y, line.strip(), room)
    barcode.drawOn(pdf, barcode_left, height - 1.9 * inch)
    pdf.setFont("Helvetica-Bold", 11)
    pdf.drawRightString(width - inch, height - 2.15 * inch, f"Document ID {letter.doc_id}")

    y = min(y, height - 2.5 * inch) - 10
    pdf.setFont("Helvetica-Bold", 14)
    pdf.drawString(left, y, text.title)
    y -= 24
    pdf.setFont("Helvetica", 10)
    vehicle = f"{letter.vehicle} " if letter.vehicle.strip() else ""
    for line in (
        f"Vehicle: {vehicle}VIN {letter.vin}",
        f"Plate: {letter.plate} ({letter.plate_state})",
    ):
        _draw(pdf, left, y, line, 10)
        y -= 14
    y -= 8
    for paragraph in text.body:
        y = _paragraph(pdf, paragraph, left, y, width - 2 * inch)
    y -= 6
    pdf.setFont("Helvetica-Bold", 11)
    pdf.drawString(left, y, "What to do")
    y -= 16
    pdf.setFont("Helvetica", 10)
    for paragraph in text.todo:
        y = _paragraph(pdf, paragraph, left, y, width - 2 * inch)
    if letter.respond_by is not None:
        pdf.setFont("Helvetica-Bold", 11)
        pdf.drawString(left, y - 4, f"Respond by: {letter.respond_by.isoformat()}")
    pdf.setFont("Helvetica", 8)
    pdf.drawString(left, 0.75 * inch, f"Quote Document ID {letter.doc_id} in every answer.")
    pdf.showPage()
    pdf.save()


def _draw(pdf: canvas.Canvas, x: float, y: float, line: str, size: float) -> None:
    """One line of the registrant's data in Helvetica ``size``, or in the Unicode font where
    Helvetica has no glyph for it (the font is Helvetica again afterwards)."""
    text, font = _printable(line)
    pdf.setFont(font, size)
    pdf.drawString(x, y, text)
    pdf.setFont("Helvetica", size)


def _printable(line: str) -> tuple[str, str]:
    """The text to draw and its font: Helvetica where it has every glyph, else the Unicode
    font, else the text spelled in Latin letters."""
    if _helvetica_prints(line):
        return line, "Helvetica"
    font = unicode_font()
    if font is None or not _has_glyphs(font, line):
        return latin_spelling(line), "Helvetica"
    return line, font


def _has_glyphs(font: str, text: str) -> bool:
    """Whether ``font`` draws every character of ``text`` (DejaVu Sans has Latin, Greek and
    Cyrillic, not Chinese or Korean: those would print as empty boxes)."""
    from reportlab.pdfbase import pdfmetrics

    covered = pdfmetrics.getFont(font).face.charToGlyph
    return all(ord(c) in covered for c in text if not c.isspace())


def _address_line(pdf: canvas.Canvas, x: float, y: float, line: str, room: float) -> float:
    """One line of the address within ``room`` points: 10 pt, smaller (down to
    :data:`ADDRESS_MIN_SIZE`) when that fits it, else wrapped at words there; the next y."""
    text, font = _printable(line)
    size = 10.0
    while size > ADDRESS_MIN_SIZE and pdf.stringWidth(text, font, size) > room:
        size -= 0.5
    pdf.setFont(font, size)
    for piece in _wrapped(pdf, text, font, size, room):
        pdf.drawString(x, y, piece)
        y -= size + 4
    pdf.setFont("Helvetica", 10)
    return y


def _wrapped(pdf: canvas.Canvas, text: str, font: str, size: float, room: float) -> list[str]:
    """``text`` in lines of at most ``room`` points, broken between words (inside a word
    only when the word alone is wider)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if pdf.stringWidth(candidate, font, size) <= room:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:
            if line and pdf.stringWidth(line + char, font, size) > room:
                lines.append(line)
                line = ""
            line += char
    if line:
        lines.append(line)
    return lines


def _helvetica_prints(text: str) -> bool:
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def latin_spelling(text: str) -> str:
    """``text`` in what Helvetica prints, a character at a time: accents dropped ("Ł" has no
    decomposition and is mapped as a letter of its own), any other character one "?" (a
    Korean syllable too, which decomposes into several letters)."""
    return "".join(_latin(c) for c in unicodedata.normalize("NFC", text))


def _latin(char: str) -> str:
    if _helvetica_prints(char):
        return char
    decomposed = unicodedata.normalize("NFKD", char.translate(_LETTERS_OF_THEIR_OWN))
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return kept if kept and _helvetica_prints(kept) else "?"


_LETTERS_OF_THEIR_OWN = str.maketrans(
    {"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i", "Ŧ": "T", "ŧ": "t"}
)


@cache
def unicode_font() -> str | None:
    """The name of the embedded Unicode font, registered with reportlab on first use; None
    when none of :data:`UNICODE_FONT_FILES` is installed."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    for path in UNICODE_FONT_FILES:
        if path.is_file():
            pdfmetrics.registerFont(TTFont(_UNICODE_FONT, str(path)))
            return _UNICODE_FONT
    return None


def _paragraph(pdf: canvas.Canvas, text: str, left: float, y: float, width: float) -> float:
    """Draw ``text`` wrapped to ``width``; the next line's y."""
    for line in _wrapped(pdf, text, "Helvetica", 10, width):
        pdf.drawString(left, y, line)
        y -= 13
    return y - 6


def file_name(letter: Letter) -> str:
    return f"{letter.mailed.strftime('%Y%m%d')}-{letter.doc_id}-{letter.kind}.pdf"


def write_day(letters: Iterable[Letter], directory: Path) -> tuple[Path, int]:
    """Every letter as a PDF in ``directory`` and ``mailing.csv`` listing them; the CSV's path
    and the count. The CSV is written last, under a temporary name first, so a printer never
    picks up a list that names a letter not yet written."""
    directory.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for letter in letters:
        name = file_name(letter)
        render(letter, directory / name)
        rows.append(
            {
                "doc_id": letter.doc_id,
                "kind": letter.kind,
                "mailed": letter.mailed.isoformat(),
                "name": letter.name,
                "address1": letter.address1,
                "address2": letter.address2,
                "city": letter.city,
                "zip": letter.zip,
                "file": name,
            }
        )
    target = directory / "mailing.csv"
    partial = directory / ".mailing.csv.part"
    with partial.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=MAILING_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: cell(value) for key, value in row.items()})
    partial.replace(target)
    return target, len(rows)
