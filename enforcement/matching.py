"""Matching insurer transactions to registrations, exactly as the IIES guide lists it.

Direct hits (disposition H), tried in this order on the registrations carrying the sent VIN:

* H1  VIN and plate
* H2  VIN and driver's license number (individual) or FEIN (organization); all-zero numbers
      mean "none" (34.9(f)(8),(15)) and never match
* H3  VIN, first 3 letters of the name and date of birth (individual)
* H4  VIN and first 3 letters of the name

Exception resolution (R): the 5/3/1 key (first 5 letters of the last name, 3 of the first, 1 of
the middle; for an organization the first three words of its name) with the DOB (individual) or
zip (organization) names registrations; exactly one of them must carry a VIN at least 70 %
like the sent one (same character at the same position, over the longer VIN).

"3 letters of the name" are its first three characters as written, spaces and hyphens included
(the guide: "the 3 of name includes punctuation and spaces"). When several registrations of a
VIN meet the same criterion, the active one with the latest registration date wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

VIN_LIKENESS = 0.70


@dataclass(frozen=True, slots=True)
class Candidate:
    """A registration and its registrant, as matching sees them."""

    id: int
    plate: str
    state: str
    vin: str
    entity_type: int | None = None
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    dob: date | None = None
    dl_number: str | None = None
    fein: str | None = None
    zip: str | None = None
    status: str | None = None
    reg_effective: date | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    """The elements of a transaction that matching uses (already edited)."""

    vin: str
    plate: str | None
    entity_type: int | None
    last_name: str | None
    first_name: str | None
    middle_name: str | None
    dob: date | None
    dl_number: str | None
    fein: str | None
    zip: str | None


def name3(name: str | None) -> str:
    return (name or "")[:3]


def _number(value: str | None) -> str | None:
    """A DL number or FEIN that identifies someone: not empty, not the all-zero default."""
    if not value or not value.strip("0"):
        return None
    return value


def zip5(value: str | None) -> str:
    return (value or "").replace("-", "")[:5]


def resolve_key(
    entity_type: int | None,
    last_name: str | None,
    first_name: str | None,
    middle_name: str | None,
    dob: date | None,
    zip_code: str | None,
) -> str | None:
    """The exception-matching key, or None when the record lacks what it needs."""
    if not last_name:
        return None
    if entity_type == 2:
        words = last_name.split()
        parts = (words + ["", "", ""])[:3]
        tail = zip5(zip_code)
    else:
        parts = [last_name, first_name or "", middle_name or ""]
        tail = dob.isoformat() if dob else ""
    if not tail:
        return None
    return f"{parts[0][:5]}|{parts[1][:3]}|{parts[2][:1]}|{tail}"


def vin_likeness(sent: str, held: str) -> float:
    """Share of positions holding the same character, over the longer of the two VINs."""
    longest = max(len(sent), len(held))
    if not longest:
        return 0.0
    return sum(a == b for a, b in zip(sent, held, strict=False)) / longest


def _preferred(candidates: Iterable[Candidate]) -> Candidate | None:
    ranked = sorted(
        candidates,
        key=lambda c: (c.status in (None, "active"), c.reg_effective or date.min, c.id),
        reverse=True,
    )
    return ranked[0] if ranked else None


def direct_hit(sent: Sent, by_vin: Sequence[Candidate]) -> tuple[str, Candidate] | None:
    """The first of H1-H4 that some registration of the sent VIN meets."""
    on_vin = [c for c in by_vin if c.vin == sent.vin]
    if not on_vin:
        return None
    if sent.plate:
        hit = _preferred(c for c in on_vin if c.plate == sent.plate)
        if hit:
            return "H1", hit
    number = _number(sent.fein if sent.entity_type == 2 else sent.dl_number)
    if number:
        field = "fein" if sent.entity_type == 2 else "dl_number"
        hit = _preferred(c for c in on_vin if getattr(c, field) == number)
        if hit:
            return "H2", hit
    key = name3(sent.last_name)
    if key:
        named = [c for c in on_vin if name3(c.last_name) == key]
        if sent.entity_type != 2 and sent.dob:
            hit = _preferred(c for c in named if c.dob == sent.dob)
            if hit:
                return "H3", hit
        hit = _preferred(named)
        if hit:
            return "H4", hit
    return None


def resolve(sent: Sent, keyed: Sequence[Candidate]) -> Candidate | None:
    """Exception matching among the registrations sharing the sent record's resolve key."""
    alike = {c.id: c for c in keyed if vin_likeness(sent.vin, c.vin) >= VIN_LIKENESS}
    return next(iter(alike.values())) if len(alike) == 1 else None


def sent_key(sent: Sent) -> str | None:
    return resolve_key(
        sent.entity_type, sent.last_name, sent.first_name, sent.middle_name, sent.dob, sent.zip
    )
