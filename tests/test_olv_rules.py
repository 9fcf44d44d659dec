"""The single definitions of the NAIC format and the VIN check digit (olv.normalize, olv.vin)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from olv import normalize, vin

VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@pytest.mark.parametrize("text", ["12345", "00000", "99999"])
def test_five_ascii_digits_are_a_naic(text: str) -> None:
    assert normalize.is_naic(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1234",
        "123456",
        " 1234",
        "1234 ",
        "12A45",
        "\u0661\u0662\u0663\u0664\u0665",  # Arabic-Indic digits: str.isdigit says yes
        "\u0967\u0968\u0969\u096a\u096b",  # Devanagari digits
        "1234\u00b2",  # superscript two
        "\uff11\uff12\uff13\uff14\uff15",  # full-width digits
    ],
)
def test_anything_else_is_not(text: str) -> None:
    assert not normalize.is_naic(text)


def test_ascii_digits_with_and_without_a_length() -> None:
    assert normalize.is_ascii_digits("0123456789")
    assert normalize.is_ascii_digits("20260101", 8)
    assert not normalize.is_ascii_digits("2026010", 8)
    assert not normalize.is_ascii_digits("")
    assert not normalize.is_ascii_digits("\u0661")


def test_known_vins() -> None:
    assert vin.check_digit("1HGCM82633A004352") == "3"
    assert vin.check_digit_ok("1HGCM82633A004352")
    assert not vin.check_digit_ok("1HGCM82643A004352")
    assert vin.check_digit_ok("ABC")  # no check digit below 17 characters
    assert not vin.check_digit_ok("1HGCM82633A00435I")  # I never occurs in a VIN
    assert vin.check_digit("1hgcm82633a004352") is None  # the alphabet is upper case
    with pytest.raises(ValueError):
        vin.with_check_digit("1HGCM8263")


@given(st.text(alphabet=VIN_ALPHABET, min_size=17, max_size=17))
def test_with_check_digit_always_passes_and_only_changes_position_9(stem: str) -> None:
    made = vin.with_check_digit(stem)
    assert vin.check_digit_ok(made)
    assert made[:8] == stem[:8] and made[9:] == stem[9:]
    assert made[8] in "0123456789X"
