"""Streaming parser for book-of-business files (SPEC §2).

Reads one record at a time, so memory stays flat whatever the file size. File-level problems
raise :class:`BobFileError`; record-level problems are yielded as :class:`Issue` values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

from bob_loader import layout
from bob_loader.errors import BobFileError, Issue
from bob_loader.validate import parse_date, vin_check_digit_ok, vin_junk_reason
from olv import normalize

_FULL_REQUIRED = ("last_name", "address", "city", "state", "zip")


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


def _check_text(chunk: bytes) -> None:
    if chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BobFileError("not a text file: UTF-16 byte-order mark")
    if b"\x00" in chunk:
        raise BobFileError("not a text file: NUL bytes")


def split_fields(text: str) -> dict[str, str]:
    return {f.name: text[f.slice].strip() for f in layout.FIELDS if f.kind != "filler"}


def parse_record(line_no: int, text: str, profile: str = "minimal") -> ParsedLine:
    """Validate one 300-character record."""
    issues: list[Issue] = []

    def err(name: str, value: str, reason: str) -> None:
        issues.append(Issue(line_no, layout.BY_NAME[name].label, value, reason))

    if not text.isascii():
        issues.append(Issue(line_no, "record", text[:40], "non-ASCII characters"))
        return ParsedLine(line_no, None, issues)
    if len(text) != layout.RECORD_LENGTH:
        issues.append(
            Issue(line_no, "record", text[:40], f"length {len(text)}, expected 300")
        )
        return ParsedLine(line_no, None, issues)

    values = split_fields(text)
    ptype = values["policy_type"]
    if ptype not in ("VS", "NS"):
        err("policy_type", ptype, "must be VS or NS")
    naic = values["naic"]
    if not naic:
        err("naic", naic, "mandatory")
    elif not (naic.isdigit() and len(naic) == 5):
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
        if ptype != "NS":
            err("vin", vin, "mandatory for VS policies")
    else:
        junk = vin_junk_reason(vin)
        if junk:
            err("vin", vin, junk)
        elif not vin_check_digit_ok(vin):
            issues.append(
                Issue(line_no, "VIN", vin, "check digit does not match", "warning")
            )
    exp_text = values["expiration_date"]
    expiration = None
    if exp_text:
        expiration = parse_date(exp_text)
        if expiration is None:
            err("expiration_date", exp_text, "must be a real date YYYYMMDD")
    zip_code = values["zip"]
    if zip_code and not (zip_code.isdigit() and len(zip_code) == 5):
        err("zip", zip_code, "must be 5 digits")
    if values["commercial"] not in ("", "Y", "N"):
        err("commercial", values["commercial"], "must be Y, N or blank")
    if profile == "full":
        for name in _FULL_REQUIRED:
            if not values[name]:
                err(name, "", "mandatory in the full profile")
        if values["commercial"] != "Y" and not values["fein"] and not values["first_name"]:
            err("first_name", "", "mandatory for individuals in the full profile")

    if any(i.severity == "error" for i in issues):
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
    """(line number, text) for each non-empty line; CRLF and LF both end a line."""
    first = True
    for number, raw in enumerate(stream, start=1):
        if first:
            _check_text(raw)
            first = False
        elif b"\x00" in raw:
            raise BobFileError(f"not a text file: NUL bytes on line {number}")
        text = raw.rstrip(b"\r\n").decode("latin-1")
        if text.strip() == "" and raw.strip(b"\r\n") == b"":
            continue
        yield number, text


def iter_bob(
    stream: BinaryIO, profile: str = "minimal", trailer: list[Trailer] | None = None
) -> Iterator[ParsedLine]:
    """Yield one :class:`ParsedLine` per record; raises :class:`BobFileError` for the file.

    The trailer (if any) is appended to ``trailer`` once reading ends and its count checked.
    """
    records = 0
    seen_trailer: Trailer | None = None
    for number, text in iter_lines(stream):
        if seen_trailer is not None:
            raise BobFileError(f"line {number}: data after the trailer on line {seen_trailer.line}")
        if text.startswith(layout.TRAILER_TAG):
            count_text = text[layout.TRAILER_COUNT].strip()
            if not count_text.isdigit():
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
    return len(head) == layout.RECORD_LENGTH and head[:2] in (b"VS", b"NS", b"TR")
