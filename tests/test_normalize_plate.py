"""``olv.normalize.plate``: marks between a plate's letters and digits are dropped; a letter or
digit of another script makes the plate no plate at all (``''``, which every caller refuses):
dropped, it would have named another plate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from olv import normalize

ASCII_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@pytest.mark.parametrize(
    ("raw", "plate"),
    [
        (" abc-123 ", "ABC123"),
        ("demo 1", "DEMO1"),
        ("A - 1", "A1"),
        ("DEMO1", "DEMO1"),
        ("ABC.123", "ABC123"),
        ("ABC_123", "ABC123"),
        ("ABC/123", "ABC123"),
        ("AB\u00a0123", "AB123"),  # a no-break space
        ("AB\u2665123", "AB123"),  # a heart, as some states' special plates carry
    ],
)
def test_marks_are_dropped_and_letters_upper_cased(raw: str, plate: str) -> None:
    assert normalize.plate(raw) == plate


@pytest.mark.parametrize(
    "raw",
    [
        "DEMO\u06631",  # an Arabic-Indic three: not DEMO1
        "DEMO\uff171",  # a full-width 7
        "D\u00c9MO1",  # an E with an acute accent: not DMO1
        "\u0414EMO1",  # a Cyrillic De
        "DEMO\u00b9",  # a superscript one
        "---",
        " ",
    ],
)
def test_anything_else_makes_it_no_plate(raw: str) -> None:
    assert normalize.plate(raw) == ""


@given(st.text(alphabet=ASCII_ALNUM + " -./*", max_size=20))
def test_typed_plates_keep_every_letter_and_digit(raw: str) -> None:
    assert normalize.plate(raw) == "".join(c for c in raw if c.isalnum()).upper()


@given(st.text(max_size=20))
def test_a_plate_is_ascii_letters_and_digits_or_nothing(raw: str) -> None:
    plate = normalize.plate(raw)
    assert all(c in ASCII_ALNUM for c in plate)
    kept = "".join(c for c in raw if c.isalnum())
    # No letter or digit is silently lost: either every one is kept, or none.
    assert plate in ("", kept.upper())
    assert (plate == "") == (not kept.isascii() or not kept)
    if plate:
        assert normalize.plate(plate) == plate
