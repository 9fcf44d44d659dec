"""Field rules for book-of-business records: dates, numbers, VINs and the two profiles."""

from __future__ import annotations

from datetime import date

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
_JUNK_VINS = {"UNKNOWN", "NA", "N/A", "NONE", "NULL", "TBD", "UNK", "VIN", "NOVIN"}


def parse_date(text: str) -> date | None:
    """``YYYYMMDD`` → date, or None when it is not a real calendar date."""
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def vin_check_digit_ok(vin: str) -> bool:
    """The North American check digit (position 9) of a 17-character VIN."""
    if len(vin) != 17:
        return True
    total = 0
    for char, weight in zip(vin, _WEIGHTS, strict=True):
        value = _TRANSLIT.get(char)
        if value is None:
            return False
        total += value * weight
    expected = total % 11
    return vin[8] == ("X" if expected == 10 else str(expected))


def vin_junk_reason(vin: str) -> str | None:
    """Why a VIN is obviously not a VIN, or None; shorter legitimate VINs pass."""
    if vin.upper() in _JUNK_VINS or vin.upper().replace("/", "") in _JUNK_VINS:
        return "placeholder, not a VIN"
    if len(set(vin)) == 1:
        return "a single repeated character, not a VIN"
    if not vin.isalnum():
        return "VINs hold letters and digits only"
    if len(vin) > 17:
        return "longer than 17 characters"
    return None
