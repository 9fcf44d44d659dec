"""Normalization and format rules shared by the SOAP service, the policy import, the BoB loader
and the state portal.

Policy numbers are compared with every non-alphanumeric character removed and upper-cased;
VINs upper-cased with white space removed; plates upper-cased with every character but ASCII
letters and digits removed (and no plate at all when they hold a letter or digit of another
script); a NAIC is exactly five ASCII digits. These rules live here and nowhere else.
"""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")
# Upper-casing and removing every byte but ASCII letters and digits, in one C pass over the
# ASCII bytes of a text (what is not ASCII goes in the encoding): a regular expression's
# substitution took three times as long, on every request whose policy key has a blank.
_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NOT_ASCII_ALNUM = bytes(b for b in range(256) if not (b < 128 and chr(b).isalnum()))
# What XML 1.0 cannot carry (and lxml refuses to write): C0 controls but tab and line ends,
# lone surrogates, U+FFFE and U+FFFF.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# What no typed identifier (VIN, plate, policy number, user name) holds: any control character
# (C0, DEL, C1) or anything XML cannot carry. PostgreSQL refuses NUL in text outright.
_NOT_FIELD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

UNKNOWN_POLICY_KEY = "UNKNOWN"
NAIC_LENGTH = 5


def policy_key(raw: str | None) -> str:
    """``'ab-123 45'`` → ``'AB12345'``."""
    if not raw:
        return ""
    if raw.isascii() and raw.isalnum():  # the usual case, nothing to remove
        return raw.upper()
    return _ascii_alnum_upper(raw)


def _ascii_alnum_upper(raw: str) -> str:
    """``raw`` with every character but ASCII letters and digits removed, upper-cased."""
    return raw.encode("ascii", "ignore").translate(_UPPER, _NOT_ASCII_ALNUM).decode("ascii")


def vin(raw: str | None) -> str:
    """``' 1hg cm826 '`` → ``'1HGCM826'``; VINs of any length are legitimate."""
    if not raw:
        return ""
    if raw.isalnum():  # the usual case: no white space to remove
        return raw.upper()
    return _SPACE.sub("", raw).upper()


def plate(raw: str | None) -> str:
    """``' abc-123 '`` → ``'ABC123'``: officers type plates with or without spaces, dashes and
    other marks, and registration files spell a plate's symbols as they please.

    ``''`` (what every caller refuses as no plate) when it holds a letter or digit outside
    ASCII: dropped, it would look up another plate (``DÉMO1`` is not ``DMO1``, nor ``DEMO٣1``
    (an Arabic-Indic three) ``DEMO1``)."""
    if not raw:
        return ""
    if raw.isascii():
        return raw.upper() if raw.isalnum() else _ascii_alnum_upper(raw)
    if any(c.isalnum() and not c.isascii() for c in raw):
        return ""
    return _ascii_alnum_upper(raw)


def is_unknown_key(raw: str | None) -> bool:
    """The IICMVA convention for "policy number not known": ``UNKNOWN`` in any case."""
    return raw is not None and raw.strip().upper() == UNKNOWN_POLICY_KEY


def is_field_text(text: str) -> bool:
    """No control characters and nothing XML cannot carry: what a typed identifier may hold."""
    return _NOT_FIELD_TEXT.search(text) is None


def is_blank(raw: str | None) -> bool:
    return raw is None or not raw.strip()


def is_ascii_digits(text: str, length: int | None = None) -> bool:
    """Only ASCII digits (and exactly ``length`` of them when given).

    ``str.isdigit`` alone also accepts other scripts' digits and superscripts (``'١٢٣'``,
    ``'²'``), which no IICMVA field may carry.
    """
    return (
        bool(text) and text.isascii() and text.isdigit() and (length is None or len(text) == length)
    )


def is_naic(text: str) -> bool:
    """A NAIC company code: exactly five ASCII digits (``'12345'``; not ``' 1234'``)."""
    return is_ascii_digits(text, NAIC_LENGTH)
