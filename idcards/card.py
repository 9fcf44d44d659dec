"""The fields of one ID card and their compact form: a CBOR map with small integer keys.

The map is what the issuer signs (:mod:`idcards.cose`). Integer keys and dates as days since
1970-01-01 (the RFC 8943 count, untagged) keep a card near 150 bytes, so its PDF-417 symbol
stays small enough to print with modules a phone camera resolves. Key numbers never change
meaning; a new field takes a new number and a new format version.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from olv import normalize

FORMAT_VERSION = 1
TEMPLATES = ("NY", "IICMVA")
FS75_EXPIRES_DAYS = 60  # 15 NYCRR 32.15(h)(4): expires 60 days after preparation or effect
FS75_REGISTRATION_DAYS = 45  # 32.15(h)(5): valid for registration 45 days
CARD_ID_BYTES = 8
MAX_NAMES = 4
_EPOCH = date(1970, 1, 1)

# CBOR key numbers (documented in the README's "ID card format" table).
K_VERSION, K_TEMPLATE, K_CARD_ID, K_ISSUER, K_INSURER, K_NAIC, K_POLICY = 0, 1, 2, 3, 4, 5, 6
K_EFFECTIVE, K_EXPIRES, K_ISSUED, K_NAMES, K_YEAR, K_MAKE, K_VIN, K_FLAGS = (
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
)
FLAG_REPLACEMENT, FLAG_FS75 = 1, 2

_TEXT_LIMITS = {"issuer": 16, "insurer_name": 60, "policy_number": 30, "make": 20, "vin": 17}
_NAME_LIMIT = 40


class CardError(ValueError):
    """Card fields that cannot make a card (the message names the field, never its value)."""


@dataclass(frozen=True)
class Card:
    template: str
    issuer: str  # DFS licence number (PC-123456) or 3-digit ICC
    insurer_name: str
    naic: str
    policy_number: str
    effective: date
    expires: date
    issued: date
    names: tuple[str, ...]
    year: int
    make: str
    vin: str
    replacement: bool = False
    fs75: bool = False
    card_id: bytes = field(default_factory=lambda: secrets.token_bytes(CARD_ID_BYTES))

    def __post_init__(self) -> None:
        check(self)

    @property
    def card_id_text(self) -> str:
        return self.card_id.hex().upper()

    @property
    def registration_until(self) -> date | None:
        """FS-75: the last day the card is accepted for a registration (None otherwise)."""
        if not self.fs75:
            return None
        return self.issued + timedelta(days=FS75_REGISTRATION_DAYS)

    def as_dict(self) -> dict[str, Any]:
        """The card as the verify answer shows it (JSON-friendly)."""
        out = dataclasses.asdict(self)
        out["card_id"] = self.card_id_text
        out["names"] = list(self.names)
        for key in ("effective", "expires", "issued"):
            out[key] = out[key].isoformat()
        until = self.registration_until
        out["registration_until"] = until.isoformat() if until else None
        return out


def printable(text: str) -> bool:
    """Text the card's fonts print: Latin-1 letters, no control characters."""
    if not (normalize.is_field_text(text) and text.isprintable()):
        return False
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def check(card: Card) -> None:
    if card.template not in TEMPLATES:
        raise CardError(f"template must be one of {', '.join(TEMPLATES)}")
    for name, limit in _TEXT_LIMITS.items():
        value = getattr(card, name)
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise CardError(f"{name} must be 1 to {limit} characters")
        if not printable(value):
            raise CardError(f"{name} has characters a card cannot print")
    if not normalize.is_naic(card.naic):
        raise CardError("naic must be five digits")
    if not (1 <= len(card.names) <= MAX_NAMES) or any(
        not isinstance(n, str) or not n.strip() or len(n) > _NAME_LIMIT for n in card.names
    ):
        raise CardError(f"names: 1 to {MAX_NAMES} names of at most {_NAME_LIMIT} characters")
    if any(not printable(n) for n in card.names):
        raise CardError("names have characters a card cannot print")
    if not isinstance(card.year, int) or not 1900 <= card.year <= 2200:
        raise CardError("year must be a model year (1900 to 2200)")
    if card.expires < card.effective:
        raise CardError("expiration date is before the effective date")
    if not isinstance(card.card_id, bytes) or len(card.card_id) != CARD_ID_BYTES:
        raise CardError(f"card id must be {CARD_ID_BYTES} bytes")


def to_map(card: Card) -> dict[int, Any]:
    flags = (FLAG_REPLACEMENT if card.replacement else 0) | (FLAG_FS75 if card.fs75 else 0)
    return {
        K_VERSION: FORMAT_VERSION,
        K_TEMPLATE: card.template,
        K_CARD_ID: card.card_id,
        K_ISSUER: card.issuer,
        K_INSURER: card.insurer_name,
        K_NAIC: card.naic,
        K_POLICY: card.policy_number,
        K_EFFECTIVE: _days(card.effective),
        K_EXPIRES: _days(card.expires),
        K_ISSUED: _days(card.issued),
        K_NAMES: list(card.names),
        K_YEAR: card.year,
        K_MAKE: card.make,
        K_VIN: card.vin,
        K_FLAGS: flags,
    }


def from_map(data: object) -> Card:
    """The card a signed map describes; anything but exactly the format's keys and types is
    refused (a verifier must not guess at what an issuer meant)."""
    if not isinstance(data, dict) or set(data) != set(range(K_FLAGS + 1)):
        raise CardError("the card's fields are not those of format version 1")
    if data[K_VERSION] != FORMAT_VERSION:
        raise CardError("unknown card format version")
    names = data[K_NAMES]
    flags = data[K_FLAGS]
    if not isinstance(names, list | tuple) or not isinstance(flags, int) or flags & ~3:
        raise CardError("malformed names or flags")
    for key in (K_TEMPLATE, K_ISSUER, K_INSURER, K_NAIC, K_POLICY, K_MAKE, K_VIN):
        if not isinstance(data[key], str):
            raise CardError("a text field is not text")
    if type(data[K_YEAR]) is not int:
        raise CardError("year is not a number")
    return Card(
        template=data[K_TEMPLATE],
        issuer=data[K_ISSUER],
        insurer_name=data[K_INSURER],
        naic=data[K_NAIC],
        policy_number=data[K_POLICY],
        effective=_date(data[K_EFFECTIVE]),
        expires=_date(data[K_EXPIRES]),
        issued=_date(data[K_ISSUED]),
        names=tuple(names),
        year=data[K_YEAR],
        make=data[K_MAKE],
        vin=data[K_VIN],
        replacement=bool(flags & FLAG_REPLACEMENT),
        fs75=bool(flags & FLAG_FS75),
        card_id=data[K_CARD_ID] if isinstance(data[K_CARD_ID], bytes) else b"",
    )


def _days(day: date) -> int:
    return (day - _EPOCH).days


def _date(days: object) -> date:
    if type(days) is not int or not 0 <= days <= 120_000:
        raise CardError("a date is not a day number")
    return _EPOCH + timedelta(days=days)
