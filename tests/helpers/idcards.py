"""Helpers for the ID-card tests: a key, sample cards, PDFs rendered to pixels with pdftoppm,
and phone-like photos (turned, blurred, small, JPEG) made from them with Pillow."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from idcards import keys, pdf, signed
from idcards.card import Card

PIN = "4821-7731"


def sample_card(issuer: str = "PC-123456", **changes: object) -> Card:
    today = date.today()
    fields: dict[str, object] = dict(
        template="NY",
        issuer=issuer,
        insurer_name="Empire Mutual Insurance Company",
        naic="12345",
        policy_number="NYA-0001234567",
        effective=today - timedelta(days=30),
        expires=today + timedelta(days=335),
        issued=today,
        names=("JANE Q PUBLIC", "JOHN PUBLIC"),
        year=2021,
        make="TOYOTA",
        vin="1HGCM82633A004352",
    )
    fields.update(changes)
    return Card(**fields)  # type: ignore[arg-type]


def make_key(folder: Path, issuer: str = "PC-123456", name: str = "issuer.key") -> keys.SigningKey:
    key, _ = keys.generate(issuer, PIN, folder / name)
    return key


def card_pdf(folder: Path, card: Card, key: keys.SigningKey, name: str = "card.pdf") -> Path:
    path = folder / name
    pdf.write(path, [(card, signed.sign_card(card, key))])
    return path


def need_pdftoppm() -> None:
    if shutil.which("pdftoppm") is None:
        pytest.fail("pdftoppm is missing: scripts/test installs poppler-utils")


def render_page(path: Path, dpi: int = 300, page: int = 1) -> Image.Image:
    """A page of a PDF as a greyscale image, the way a scanner sees it."""
    need_pdftoppm()
    prefix = path.with_name(f"{path.stem}-{dpi}-{page}")
    subprocess.run(
        ["pdftoppm", "-r", str(dpi), "-gray", "-png", "-f", str(page), "-l", str(page),
         "-singlefile", str(path), str(prefix)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    with Image.open(prefix.with_suffix(".png")) as image:
        return image.convert("L")


def top_card(page: Image.Image) -> Image.Image:
    """The upper card of a Letter page: what a phone photo of one cut-out card frames."""
    return page.crop((0, 0, page.width, page.height // 2))


def photo(
    image: Image.Image, *, angle: float = 0, blur: float = 0, width: int | None = None
) -> bytes:
    """A phone-like JPEG: turned by ``angle`` degrees, blurred, and scaled to ``width``."""
    shot = image.convert("RGB")
    if angle:
        shot = shot.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=(200, 190, 170))
    if blur:
        shot = shot.filter(ImageFilter.GaussianBlur(blur))
    if width:
        shot = shot.resize(
            (width, round(shot.height * width / shot.width)), Image.Resampling.LANCZOS
        )
    out = io.BytesIO()
    shot.save(out, "JPEG", quality=85)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
