"""Field rules for book-of-business records: dates, numbers, VINs and the two profiles."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from operator import mul

PROFILES = ("minimal", "full")

_TRANSLIT = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# Bytes translation table: VIN character -> its value; 255 marks characters a VIN cannot hold.
# With it the check runs in C (translate, map, sum) — cheap enough for a million records.
_VALUES = bytes(_TRANSLIT.get(chr(i), 255) for i in range(256))
_JUNK_VINS = {"UNKNOWN", "NA", "N/A", "NONE", "NULL", "TBD", "UNK", "VIN", "NOVIN"}


@lru_cache(maxsize=1 << 16)
def parse_date(text: str) -> date | None:
    """``YYYYMMDD`` → date, or None when it is not a real calendar date.

    Cached: a book of business repeats the same few thousand dates a million times.
    """
    if len(text) != 8 or not text.isdigit() or not text.isascii():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def vin_check_digit_ok(vin: str) -> bool:
    """The North American check digit (position 9) of a 17-character VIN.

    Other lengths (pre-1981 and non-US vehicles, trailers) have no check digit: always True.
    I, O and Q never occur in a 17-character VIN, so they fail the check.
    """
    if len(vin) != 17:
        return True
    if not vin.isascii():
        return False
    values = vin.encode("ascii").translate(_VALUES)
    if 255 in values:
        return False
    expected = sum(map(mul, values, _WEIGHTS)) % 11
    return vin[8] == ("X" if expected == 10 else str(expected))


def vin_junk_reason(vin: str) -> str | None:
    """Why a VIN is obviously not a VIN, or None; shorter legitimate VINs pass."""
    upper = vin.upper()
    if upper in _JUNK_VINS or upper.replace("/", "") in _JUNK_VINS:
        return "placeholder, not a VIN"
    if len(set(upper)) == 1:
        return "a single repeated character, not a VIN"
    if not (vin.isascii() and vin.isalnum()):
        return "VINs hold letters and digits only"
    if len(vin) > 17:
        return "longer than 17 characters"
    return None


def is_digits(text: str, length: int) -> bool:
    """Exactly ``length`` ASCII digits (``str.isdigit`` alone also accepts other scripts)."""
    return len(text) == length and text.isascii() and text.isdigit()
