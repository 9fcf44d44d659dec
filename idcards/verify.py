"""The answer for one card's barcode text (SPEC §7), given a way to look an issuer's key up.

The answer, the same on the command line and in the portal's API::

    {"valid": bool, "reason": str, "issuer": str | None, "key_id": str | None,
     "card": {...} | None, "expired": bool, "revoked": bool, "signature": "good" | "bad" | None}

``reason`` is "valid" or the first thing that makes the card not valid, in this order: the
barcode is malformed, the key is unknown, the signature is bad, the card names another issuer
than the key's, the key was revoked as compromised on or before the card's issue date (or
retired before it), the card is not yet in effect, the card's issue date is after today, the
card (or an FS-75 60 days after its preparation) has expired. The dates are told apart from the
signature: ``signature`` is "good" on an expired card. The card's fields are shown only when
the signature is good.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from idcards import armour, cose, signed
from idcards.card import FS75_EXPIRES_DAYS
from idcards.errors import CannotRead

COMPROMISED, RETIRED = "compromised", "retired"
# An issuer dates a card by its own calendar and the verifier by its own (the portal: UTC), so
# a card printed late in the evening east of the verifier may carry the verifier's tomorrow:
# local dates around the world lie at most a day apart, so one day is forgiven, no more.
ISSUE_DATE_SLACK = timedelta(days=1)
FUTURE_ISSUE = "issue date in the future"
REVOKE_REASONS = (COMPROMISED, RETIRED)


@dataclass(frozen=True)
class KnownKey:
    """What the state's registry knows of a key id."""

    key_id: str
    issuer: str
    issuer_name: str
    public_key: Ed25519PublicKey
    revoked_at: datetime | None = None
    revoke_reason: str | None = None


Lookup = Callable[[str], KnownKey | None]
Signature = Literal["good", "bad"]


class Answer(TypedDict):
    """The answer, as the module's docstring shows it (``card`` is :meth:`Card.as_dict`)."""

    valid: bool
    reason: str
    issuer: str | None
    key_id: str | None
    card: dict[str, Any] | None
    expired: bool
    revoked: bool
    signature: Signature | None


class _Signer(TypedDict):
    """What is shown once the key is known: its issuer and id."""

    issuer: str
    key_id: str


class _Shown(_Signer):
    """What is shown once the signature is good: the card's fields too."""

    signature: Signature
    card: dict[str, Any]


def verify_text(text: str, lookup: Lookup, today: date) -> Answer:
    try:
        unverified = signed.read(text)
    except signed.Unreadable as exc:
        if isinstance(exc.__cause__, armour.ArmourError):
            raise CannotRead(str(exc)) from None
        return _answer(False, f"malformed: {exc}")
    kid = unverified.key_id
    known = lookup(kid)
    if known is None:
        return _answer(False, "unknown key", key_id=kid)
    base: _Signer = {"issuer": known.issuer, "key_id": kid}
    if not cose.check(unverified.message, known.public_key):
        return _answer(False, "bad signature", signature="bad", **base)
    card = unverified.card
    shown: _Shown = {**base, "signature": "good", "card": card.as_dict()}
    if card.issuer != known.issuer:
        return _answer(False, "the card names another issuer than its key's", **shown)
    if _revoked(known, card.issued):
        return _answer(False, f"key revoked ({known.revoke_reason})", revoked=True, **shown)
    if today < card.effective:
        return _answer(False, "not yet in effect", **shown)
    # An issuer signs on the day it prints: a later issue date is a post-dated card, whatever
    # its type, and would stretch an FS-75's 60 days (counted from that date) at will.
    if card.issued > today + ISSUE_DATE_SLACK:
        return _answer(False, FUTURE_ISSUE, **shown)
    last_day = card.expires
    if card.fs75:
        last_day = min(last_day, card.issued + timedelta(days=FS75_EXPIRES_DAYS))
    if today > last_day:
        reason = "FS-75 past 60 days" if card.fs75 and last_day < card.expires else "expired"
        return _answer(False, reason, expired=True, **shown)
    return _answer(True, "valid", **shown)


def _revoked(known: KnownKey, issued: date) -> bool:
    """Compromised: cards dated on or after the revocation day are not the issuer's (a thief
    dates a card the day it is made). Retired: the key signs nothing after its last day."""
    if known.revoked_at is None:
        return False
    day = known.revoked_at.date()
    if known.revoke_reason == COMPROMISED:
        return issued >= day
    return issued > day


def _answer(
    valid: bool,
    reason: str,
    *,
    issuer: str | None = None,
    key_id: str | None = None,
    card: dict[str, Any] | None = None,
    expired: bool = False,
    revoked: bool = False,
    signature: Signature | None = None,
) -> Answer:
    return {
        "valid": valid,
        "reason": reason,
        "issuer": issuer,
        "key_id": key_id,
        "card": card,
        "expired": expired,
        "revoked": revoked,
        "signature": signature,
    }
