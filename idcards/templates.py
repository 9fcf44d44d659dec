"""What a state's card shows, in which order (SPEC §7).

New York (15 NYCRR Part 32): the title, the issuer (DFS licence number or DMV ICC), the
insurer's name and NAIC, the policy number, the effective and expiration dates, the
registrants' names, the vehicle's year, make and VIN, "Vehicle Replacement" when asked, and the
barcode. An FS-75 (32.15) adds its copy's use, its NYAIP statement and its 60/45-day dates.
The generic IICMVA card carries the same data under a neutral title, for states without a
format of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from idcards.card import Card

Field = tuple[str, Callable[[Card], str]]


def _vehicle(card: Card) -> str:
    return f"{card.year} {card.make}"


_COMMON: tuple[Field, ...] = (
    ("Insurer", lambda c: c.insurer_name),
    ("NAIC", lambda c: c.naic),
    ("Policy number", lambda c: c.policy_number),
    ("Effective", lambda c: c.effective.strftime("%m/%d/%Y")),
    ("Expires", lambda c: c.expires.strftime("%m/%d/%Y")),
    ("Insured / registrant", lambda c: "; ".join(c.names)),
    ("Year and make", _vehicle),
    ("VIN", lambda c: c.vin),
)


@dataclass(frozen=True)
class Template:
    code: str
    title: str
    issuer_label: str
    fields: tuple[Field, ...]
    fs75_title: str
    fs75_statement: str
    footer: str


NY = Template(
    code="NY",
    title="NEW YORK STATE INSURANCE IDENTIFICATION CARD",
    issuer_label="Issuer (DFS licence / ICC)",
    fields=_COMMON,
    fs75_title="NEW YORK STATE INSURANCE IDENTIFICATION CARD - NYAIP TEMPORARY (FS-75)",
    fs75_statement=(
        "Issued in the name of the New York Automobile Insurance Plan on behalf of the insurer "
        "the Plan designates, under Article 6 of the Vehicle and Traffic Law."
    ),
    footer="Carry this card in the vehicle. Its barcode is signed; any officer can check it.",
)

IICMVA = Template(
    code="IICMVA",
    title="INSURANCE IDENTIFICATION CARD",
    issuer_label="Issuer",
    fields=_COMMON,
    fs75_title="TEMPORARY INSURANCE IDENTIFICATION CARD",
    fs75_statement="Temporary card issued while the policy is assigned.",
    footer="Proof of insurance. The signed barcode can be checked online (IICMVA model).",
)

TEMPLATES = {t.code: t for t in (NY, IICMVA)}


def for_card(card: Card) -> Template:
    return TEMPLATES[card.template]
