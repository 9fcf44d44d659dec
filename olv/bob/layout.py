"""The IICMVA book-of-business record layout: 300 fixed-width columns.

This table is the one definition of the layout; the parser, the exporter and the tests all
read it. Positions are 1-based and inclusive, as the Insurance Data Transfer Guide writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

RECORD_LENGTH = 300
TRAILER_TAG = "TR"
# Optional header: a first record tagged "HD" in columns 1-2 (no policy type is "HD"). The
# Transfer Guide defines only the trailer, but senders that write a header for their own
# systems (sender, file date) put it first; its content is not read.
HEADER_TAG = "HD"
# Field 16, the commercial indicator: "Y" marks a commercial policy; "N" or blank do not.
COMMERCIAL = "Y"
COMMERCIAL_VALUES = ("", COMMERCIAL, "N")

Kind = Literal["AN", "N", "date", "filler"]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    start: int  # 1-based, inclusive
    length: int
    kind: Kind
    label: str

    @property
    def end(self) -> int:
        return self.start + self.length - 1

    @property
    def slice(self) -> slice:
        return slice(self.start - 1, self.end)


FIELDS: tuple[Field, ...] = (
    Field("policy_type", 1, 2, "AN", "policy type"),
    Field("naic", 3, 5, "N", "NAIC"),
    Field("policy_number", 8, 30, "AN", "policy number"),
    Field("effective_date", 38, 8, "date", "effective date"),
    Field("vin", 46, 25, "AN", "VIN"),
    Field("last_name", 71, 40, "AN", "last name or organization"),
    Field("name_prefix", 111, 3, "AN", "name prefix"),
    Field("middle_name", 114, 20, "AN", "middle name"),
    Field("first_name", 134, 40, "AN", "first name"),
    Field("name_suffix", 174, 3, "AN", "name suffix"),
    Field("fein", 177, 9, "AN", "FEIN"),
    Field("address", 186, 50, "AN", "address"),
    Field("city", 236, 35, "AN", "city"),
    Field("state", 271, 2, "AN", "state"),
    Field("zip", 273, 5, "N", "ZIP"),
    Field("commercial", 278, 1, "AN", "commercial indicator"),
    Field("filler_1", 279, 1, "filler", "filler"),
    Field("expiration_date", 280, 8, "date", "policy expiration date"),
    Field("filler_2", 288, 13, "filler", "filler"),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}

# Trailer record: "TR", record count (3-14), process date (15-22), spaces to 300.
TRAILER_COUNT = slice(2, 14)
TRAILER_DATE = slice(14, 22)

assert sum(f.length for f in FIELDS) == RECORD_LENGTH
assert all(a.end + 1 == b.start for a, b in zip(FIELDS, FIELDS[1:], strict=False))


def is_commercial(indicator: str) -> bool:
    """Whether field 16 (already stripped of its padding) marks the policy commercial."""
    return indicator == COMMERCIAL


def format_record(values: Mapping[str, str]) -> str:
    """One 300-character record from field values (fillers are always spaces).

    Values are written as given (dates already ``YYYYMMDD``), left-justified and space-filled;
    a value that does not fit its field, or that would break the line, raises ``ValueError``
    rather than silently corrupting the columns after it.
    """
    parts = []
    for f in FIELDS:
        value = "" if f.kind == "filler" else values.get(f.name, "")
        if len(value) > f.length:
            raise ValueError(f"{f.label}: {value!r} is longer than {f.length} characters")
        if not (value.isascii() and value.isprintable()):
            raise ValueError(f"{f.label}: {value!r} holds characters a BoB record cannot carry")
        parts.append(value.ljust(f.length))
    return "".join(parts)


def format_trailer(count: int, process_date: str) -> str:
    """The ``TR`` trailer: record count (zero-padded to 12 digits) and ``YYYYMMDD`` date."""
    width = TRAILER_COUNT.stop - TRAILER_COUNT.start
    if count < 0 or len(str(count)) > width:
        raise ValueError(f"trailer count {count} does not fit {width} digits")
    text = TRAILER_TAG + str(count).zfill(width) + process_date
    return text.ljust(RECORD_LENGTH)
