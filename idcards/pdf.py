"""The printed cards: a US Letter page holds two cards, one above the other, to cut apart.

An FS-75 fills one page with its two identical copies (one kept by the applicant, one handed to
DMV with the registration, 15 NYCRR 32.15); other cards are printed two to a page in the
order given. The barcode is drawn as a one-pixel-per-module image scaled to its printed size
(:data:`idcards.barcode.MODULE_MM`), which keeps a 10,000-card file small and quick to write.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from reportlab.lib.pagesizes import letter
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from idcards import barcode
from idcards.card import Card
from idcards.templates import Template, for_card

PAGE_W, PAGE_H = letter
CARD_H = PAGE_H / 2
MARGIN = 12 * mm
LINE_H: float = 4.6 * mm  # typed: reportlab's units are untyped


def write(path: Path, cards: Iterable[tuple[Card, str]], *, fs75_copies: bool = True) -> int:
    """Write the cards (each with its barcode text) to ``path``; returns the pages written."""
    canvas = Canvas(str(path), pagesize=letter, pageCompression=1)
    canvas.setTitle("Insurance identification cards")
    canvas.setCreator("OLV")
    slot, pages = 0, 0
    for card, text in cards:
        copies = 2 if (card.fs75 and fs75_copies) else 1
        if copies == 2 and slot == 1:  # an FS-75's two copies share a page
            canvas.showPage()
            slot = 0
        for copy in range(copies):
            _card(canvas, card, text, PAGE_H - (slot + 1) * CARD_H, copy + 1 if copies == 2 else 0)
            slot += 1
            if slot == 2:
                canvas.showPage()
                pages += 1
                slot = 0
    if slot:
        canvas.showPage()
        pages += 1
    canvas.save()
    return pages


def _card(canvas: Canvas, card: Card, text: str, bottom: float, copy: int) -> None:
    template = for_card(card)
    left, right, top = MARGIN, PAGE_W - MARGIN, bottom + CARD_H - MARGIN
    canvas.setDash(3, 3)
    canvas.setLineWidth(0.5)
    canvas.rect(left - 4 * mm, bottom + 4 * mm, right - left + 8 * mm, CARD_H - 8 * mm)
    canvas.setDash()
    y = top - 4 * mm
    canvas.setFont("Helvetica-Bold", 11)
    canvas.drawString(left, y, template.fs75_title if card.fs75 else template.title)
    y -= 6 * mm
    canvas.setFont("Helvetica", 8)
    if card.fs75:
        canvas.drawString(left, y, template.fs75_statement)
        y -= 4 * mm
        use = ("APPLICANT'S TEMPORARY CARD", "SUBMIT TO DMV WITH THE REGISTRATION")[copy - 1]
        until = card.registration_until
        canvas.drawString(
            left,
            y,
            f"Copy {copy} of 2: {use}. Prepared {card.issued:%m/%d/%Y}; expires 60 days after; "
            f"valid for registration until {until:%m/%d/%Y}."
            if until
            else "",
        )
        y -= 5 * mm
    y = _fields(canvas, template, card, left, y)
    if card.replacement:
        canvas.setFont("Helvetica-Bold", 11)
        canvas.drawString(left, y - 1 * mm, "VEHICLE REPLACEMENT")
    _barcode(canvas, text, left, bottom + 12 * mm)
    canvas.setFont("Helvetica", 7)
    canvas.drawString(left, bottom + 7 * mm, f"Card {card.card_id_text}.  {template.footer}")


def _fields(canvas: Canvas, template: Template, card: Card, left: float, y: float) -> float:
    rows = [(template.issuer_label, card.issuer)]
    rows += [(label, value(card)) for label, value in template.fields]
    # Two text objects (labels, values) instead of a string each: a third of the time.
    for font, size, x, column in (
        ("Helvetica", 8, left, [label for label, _ in rows]),
        ("Helvetica-Bold", 10, left + 45 * mm, [value for _, value in rows]),
    ):
        text = canvas.beginText(x, y)
        text.setFont(font, size, leading=LINE_H)
        for line in column:
            text.textLine(line)
        canvas.drawText(text)
    return y - len(rows) * LINE_H


def _barcode(canvas: Canvas, text: str, left: float, bottom: float) -> None:
    rows = barcode.codes(text)
    width_mm, height_mm = barcode.size_mm(rows)
    quiet = barcode.QUIET_MODULES * barcode.MODULE_MM * mm
    x = PAGE_W - MARGIN - width_mm * mm - quiet
    canvas.drawImage(ImageReader(barcode.bitmap(rows)), x, bottom, width_mm * mm, height_mm * mm)
