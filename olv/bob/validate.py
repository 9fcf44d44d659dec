"""Field rules for book-of-business records: dates, VINs and the two profiles.

The VIN check digit is :mod:`olv.vin`; the NAIC and digit rules are :mod:`olv.normalize`.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

from olv import normalize

PROFILES = ("minimal", "full")

_JUNK_VINS = {"UNKNOWN", "NA", "N/A", "NONE", "NULL", "TBD", "UNK", "VIN", "NOVIN"}


@lru_cache(maxsize=1 << 16)
def parse_date(text: str) -> date | None:
    """``YYYYMMDD`` → date, or None when it is not a real calendar date.

    Cached: a book of business repeats the same few thousand dates a million times.
    """
    if not normalize.is_ascii_digits(text, 8):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


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
