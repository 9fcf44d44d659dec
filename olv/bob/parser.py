"""Streaming parser for book-of-business files (SPEC §2).

Reads one record at a time, so memory stays flat whatever the file size (also for a file with
no line breaks at all: lines are read with a length cap). File-level problems raise
:class:`BobFileError`; record-level problems are yielded as :class:`Issue` values.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

from olv import iicmva, normalize
from olv import vin as vin_rules
from olv.bob import layout
from olv.bob.errors import BobFileError, Issue
from olv.bob.lines import capped_lines
from olv.bob.validate import PROFILES, parse_date, vin_junk_reason

_FULL_REQUIRED = ("last_name", "address", "city", "state", "zip")
# Data fields and one C-level getter that cuts all of them out of a record at once.
_NAMES = tuple(f.name for f in layout.FIELDS if f.kind != "filler")
_CUT = itemgetter(*(f.slice for f in layout.FIELDS if f.kind != "filler"))
_LABEL = {f.name: f.label for f in layout.FIELDS}
_RECORD_TAGS = (*iicmva.POLICY_TYPES, layout.TRAILER_TAG, layout.HEADER_TAG)
_POLICY_TYPE_RULE = "must be " + " or ".join(iicmva.POLICY_TYPES)
# A line longer than this is certainly not a record; reading stops there so that a file without
# line breaks cannot pull hundreds of megabytes into one string.
MAX_LINE = 1024
_SNIFF = 4096
# Control characters that never occur in a text file (tab, LF, FF, CR are allowed).
_BINARY_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13)) + b"\x7f"


@dataclass(slots=True)
class BobRecord:
    line: int
    policy_type: str
    naic: str
    policy_number: str
    policy_key: str
    effective_date: date
    vin: str
    expiration_date: date | None
    fields: dict[str, str]

    @property
    def commercial(self) -> bool:
        return layout.is_commercial(self.fields["commercial"])


@dataclass(slots=True)
class ParsedLine:
    line: int
    record: BobRecord | None
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.record is not None


@dataclass(slots=True)
class Trailer:
    line: int
    count: int
    process_date: str


def check_text(head: bytes) -> None:
    """Reject what is plainly not a text file, judged from its first bytes."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BobFileError("not a text file: UTF-16 byte-order mark")
    if b"\x00" in head:
        raise BobFileError("not a text file: NUL bytes")
    if head:
        control = len(head) - len(head.translate(None, _BINARY_BYTES))
        if control * 100 > len(head):  # more than 1 % control bytes: binary data
            raise BobFileError("not a text file: binary data")


def split_fields(text: str) -> dict[str, str]:
    return dict(zip(_NAMES, map(str.strip, _CUT(text)), strict=True))


def parse_record(line_no: int, text: str, profile: str = "minimal") -> ParsedLine:
    """Validate one 300-character record (without its line break)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown validation profile {profile!r}; expected one of {PROFILES}")
    issues: list[Issue] = []

    def err(name: str, value: str, reason: str) -> None:
        issues.append(Issue(line_no, _LABEL[name], value, reason))

    if len(text) != layout.RECORD_LENGTH:
        reason = f"length {len(text)}, expected {layout.RECORD_LENGTH}"
        return ParsedLine(line_no, None, [Issue(line_no, "record", text[:40], reason)])
    if not text.isascii():
        return ParsedLine(
            line_no, None, [Issue(line_no, "record", text[:40], "non-ASCII characters")]
        )

    values = split_fields(text)
    ptype = values["policy_type"]
    if ptype not in iicmva.POLICY_TYPES:
        err("policy_type", ptype, _POLICY_TYPE_RULE)
    naic = values["naic"]
    if not naic:
        err("naic", naic, "mandatory")
    elif not normalize.is_naic(naic):
        err("naic", naic, "must be 5 digits")
    number = values["policy_number"]
    key = normalize.policy_key(number)
    if not key:
        err("policy_number", number, "mandatory")
    eff_text = values["effective_date"]
    effective = parse_date(eff_text)
    if effective is None:
        err("effective_date", eff_text, "mandatory, must be a real date YYYYMMDD")
    vin = normalize.vin(values["vin"])
    if not vin:
        if ptype != iicmva.FLEET:
            err("vin", vin, f"mandatory for {iicmva.VEHICLE_SPECIFIC} policies")
    else:
        junk = vin_junk_reason(vin)
        if junk:
            err("vin", vin, junk)
        elif not vin_rules.check_digit_ok(vin):
            issues.append(
                Issue(line_no, _LABEL["vin"], vin, "check digit does not match", "warning")
            )
    exp_text = values["expiration_date"]
    expiration = None
    if exp_text:
        expiration = parse_date(exp_text)
        if expiration is None:
            err("expiration_date", exp_text, "must be a real date YYYYMMDD")
        elif effective is not None and expiration < effective:
            issues.append(
                Issue(
                    line_no,
                    _LABEL["expiration_date"],
                    exp_text,
                    "before the effective date",
                    "warning",
                )
            )
    zip_code = values["zip"]
    if zip_code and not normalize.is_ascii_digits(zip_code, 5):
        err("zip", zip_code, "must be 5 digits")
    if values["commercial"] not in layout.COMMERCIAL_VALUES:
        err("commercial", values["commercial"], "must be Y, N or blank")
    if profile == "full":
        for name in _FULL_REQUIRED:
            if not values[name]:
                err(name, "", "mandatory in the full profile")
        state = values["state"]
        if state and not (len(state) == 2 and state.isalpha()):
            err("state", state, "must be a 2-letter state code")
        # An individual: not flagged commercial and no FEIN (organizations carry one).
        if (
            not layout.is_commercial(values["commercial"])
            and not values["fein"]
            and not values["first_name"]
        ):
            err("first_name", "", "mandatory for individuals in the full profile")

    if issues and normalize.is_naic(naic):
        # Whose line it is: an insurer is shown only the problems on its own records.
        issues = [replace(issue, naic=naic) for issue in issues]
    for issue in issues:
        if issue.severity == "error":
            return ParsedLine(line_no, None, issues)
    assert effective is not None
    record = BobRecord(
        line=line_no,
        policy_type=ptype,
        naic=naic,
        policy_number=number,
        policy_key=key,
        effective_date=effective,
        vin=vin,
        expiration_date=expiration,
        fields=values,
    )
    return ParsedLine(line_no, record, issues)


def iter_lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """(line number, text) for each non-empty line; CRLF and LF both end a line.

    A line longer than :data:`MAX_LINE` is cut there (the rest of it is skipped, never read
    into memory), so it still shows up as one record of the wrong length.
    """
    if not hasattr(stream, "peek"):  # e.g. io.BytesIO in tests: give it a buffer to sniff
        stream = io.BufferedReader(stream)  # type: ignore[type-var]
    check_text(stream.peek(_SNIFF)[:_SNIFF])
    for number, raw, _overlong in capped_lines(stream, MAX_LINE):
        if b"\x00" in raw:
            raise BobFileError(f"not a text file: NUL bytes on line {number}")
        body = raw.rstrip(b"\r\n")
        if not body:
            continue  # blank lines (typically one at the end of the file) carry nothing
        yield number, body.decode("latin-1")


def iter_bob(
    stream: BinaryIO, profile: str = "minimal", trailer: list[Trailer] | None = None
) -> Iterator[ParsedLine]:
    """Yield one :class:`ParsedLine` per record; raises :class:`BobFileError` for the file.

    The trailer (if any) is appended to ``trailer`` once reading ends and its count checked.
    A header (``HD``, first line only) is skipped: it is neither a record nor counted.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown validation profile {profile!r}; expected one of {PROFILES}")
    records = 0
    seen_trailer: Trailer | None = None
    first = True
    for number, text in iter_lines(stream):
        if first and text.startswith(layout.HEADER_TAG):
            first = False
            continue
        first = False
        if seen_trailer is not None:
            raise BobFileError(f"line {number}: data after the trailer on line {seen_trailer.line}")
        if text.startswith(layout.TRAILER_TAG):
            count_text = text[layout.TRAILER_COUNT].strip()
            if not normalize.is_ascii_digits(count_text):
                raise BobFileError(f"line {number}: trailer count {count_text!r} is not a number")
            seen_trailer = Trailer(number, int(count_text), text[layout.TRAILER_DATE].strip())
            continue
        records += 1
        yield parse_record(number, text, profile)
    if records == 0:
        raise BobFileError("empty file: no records")
    if seen_trailer is not None:
        if seen_trailer.count != records:
            raise BobFileError(
                f"trailer mismatch: trailer says {seen_trailer.count} records, file has {records}"
            )
        if trailer is not None:
            trailer.append(seen_trailer)


def read_bob(path: Path, profile: str = "minimal") -> Iterator[ParsedLine]:
    with path.open("rb") as stream:
        yield from iter_bob(stream, profile)


def looks_like_bob(path: Path) -> bool:
    """A cheap sniff used by ``olv policies import`` to tell BoB files from CSV."""
    with path.open("rb") as stream:
        head = stream.readline(400).rstrip(b"\r\n")
        if head.startswith(layout.HEADER_TAG.encode()):  # a header of any length: judge the next
            head = stream.readline(400).rstrip(b"\r\n")
    return len(head) == layout.RECORD_LENGTH and head[:2].decode("latin-1") in _RECORD_TAGS
