"""The North American VIN check digit (49 CFR 565): position 9 of a 17-character VIN.

The one implementation, used by the BoB validator (a mismatch is a warning) and by the
synthetic-data generator (which must produce VINs that pass).
"""

from __future__ import annotations

from operator import mul

__all__ = ["LENGTH", "check_digit", "check_digit_ok", "with_check_digit"]

LENGTH = 17
CHECK_POSITION = 8  # 0-based index of the check digit

_TRANSLIT = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# Bytes translation table: VIN character -> its value; 255 marks characters a VIN cannot hold
# (I, O, Q, lower case, punctuation). With it the check runs in C (translate, map, sum): cheap
# enough for a million records.
_INVALID = 255
_VALUES = bytes(_TRANSLIT.get(chr(i), _INVALID) for i in range(256))


def check_digit(vin: str) -> str | None:
    """The check digit a 17-character VIN must carry (``'0'``-``'9'`` or ``'X'``).

    None when the text is not 17 characters of the VIN alphabet. The character at the check
    position itself does not count (its weight is 0).
    """
    if len(vin) != LENGTH or not vin.isascii():
        return None
    values = vin.encode("ascii").translate(_VALUES)
    if values.count(_INVALID) > (values[CHECK_POSITION] == _INVALID):
        return None  # a character no VIN holds (the check position may hold anything here)
    total = sum(map(mul, values, _WEIGHTS)) % 11
    return "X" if total == 10 else str(total)


def check_digit_ok(vin: str) -> bool:
    """Whether a VIN's check digit matches.

    Other lengths (pre-1981 and non-US vehicles, trailers) have no check digit: always True.
    I, O and Q never occur in a 17-character VIN, so they fail the check.
    """
    if len(vin) != LENGTH:
        return True
    expected = check_digit(vin)
    return expected is not None and vin[CHECK_POSITION] == expected


def with_check_digit(vin17: str) -> str:
    """The 17-character VIN with its check digit set (for synthesized data)."""
    expected = check_digit(vin17)
    if expected is None:
        raise ValueError(f"{vin17!r} is not 17 characters of the VIN alphabet")
    return vin17[:CHECK_POSITION] + expected + vin17[CHECK_POSITION + 1 :]
