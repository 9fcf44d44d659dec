"""Parser and validator of book-of-business files (SPEC §2), without a database."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from olv.bob import layout
from olv.bob.errors import BobFileError
from olv.bob.parser import iter_bob, looks_like_bob, parse_record, read_bob
from olv.bob.validate import parse_date, vin_junk_reason
from olv.vin import check_digit_ok, with_check_digit

FIXTURES = Path(__file__).parent / "fixtures" / "bob"
GOOD_VIN = "1HGCM82633A004352"  # a real-world example with a correct check digit


def record(**values: str) -> str:
    base = {
        "policy_type": "VS",
        "naic": "12345",
        "policy_number": "AB-123 45",
        "effective_date": "20260101",
        "vin": GOOD_VIN,
    }
    return layout.format_record(base | values)


def parse(**values: str):
    return parse_record(7, record(**values))


def problems(parsed) -> list[tuple[str, str, str]]:
    return [(i.field, i.severity, i.reason) for i in parsed.issues]


def test_valid_record_normalizes_policy_number_and_vin():
    parsed = parse(vin=" 1hgcm82633a004352", policy_number="ab-123 45")
    assert parsed.ok and parsed.issues == []
    rec = parsed.record
    assert (rec.naic, rec.policy_type, rec.policy_key) == ("12345", "VS", "AB12345")
    assert rec.policy_number == "ab-123 45"  # kept as written; the key is the normalized form
    assert rec.vin == GOOD_VIN
    assert rec.effective_date == date(2026, 1, 1) and rec.expiration_date is None


def test_bad_check_digit_on_a_17_character_vin_is_only_a_warning():
    parsed = parse(vin="1HGCM82643A004352")
    assert parsed.ok
    assert problems(parsed) == [("VIN", "warning", "check digit does not match")]


@pytest.mark.parametrize("vin", ["ABC123", "12345678901", "W0L000051T2123456"[:13]])
def test_shorter_vins_are_legitimate(vin: str):
    assert parse(vin=vin).issues == []


@pytest.mark.parametrize(
    ("vin", "reason"),
    [
        ("UNKNOWN", "placeholder"),
        ("N/A", "placeholder"),
        ("none", "placeholder"),
        ("11111111111111111", "single repeated"),
        ("XXXXXX", "single repeated"),
        ("1HGCM82633A0043521", "longer than 17"),
        ("1HG-CM82633", "letters and digits"),
    ],
)
def test_junk_vins_are_errors(vin: str, reason: str):
    parsed = parse(vin=vin)
    assert not parsed.ok
    assert [(f, s) for f, s, _ in problems(parsed)] == [("VIN", "error")]
    assert reason in parsed.issues[0].reason


def test_vin_is_mandatory_for_vs_and_optional_for_ns():
    assert problems(parse(vin="")) == [("VIN", "error", "mandatory for VS policies")]
    assert parse(vin="", policy_type="NS").ok


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"effective_date": "20260230"}, "effective date"),
        ({"effective_date": "2026011"}, "effective date"),
        ({"effective_date": ""}, "effective date"),
        ({"expiration_date": "20261301"}, "policy expiration date"),
        ({"naic": "1234A"}, "NAIC"),
        ({"naic": "1234"}, "NAIC"),
        ({"naic": ""}, "NAIC"),
        ({"policy_number": "--"}, "policy number"),
        ({"policy_type": "XX"}, "policy type"),
        ({"zip": "6O601"}, "ZIP"),
        ({"commercial": "X"}, "commercial indicator"),
    ],
)
def test_field_errors(values: dict[str, str], field: str):
    parsed = parse(**values)
    assert not parsed.ok
    assert [i.field for i in parsed.issues] == [field]
    assert parsed.issues[0].report_line().startswith(f"line 7: {field}: ")


def test_real_calendar_dates():
    assert parse_date("20240229") == date(2024, 2, 29)
    assert parse_date("20230229") is None
    assert parse_date("２０２４０２２９") is None  # full-width digits are digits, but not ASCII
    assert parse(expiration_date="20240229", effective_date="20240101").ok


def test_expiration_before_effective_is_a_warning():
    parsed = parse(effective_date="20260601", expiration_date="20260101")
    assert parsed.ok
    assert problems(parsed) == [("policy expiration date", "warning", "before the effective date")]


def test_full_profile_requires_insured_fields():
    text = record()
    minimal = parse_record(1, text, "minimal")
    full = parse_record(1, text, "full")
    assert minimal.ok and not full.ok
    assert {i.field for i in full.issues} == {
        "last name or organization",
        "address",
        "city",
        "state",
        "ZIP",
        "first name",
    }
    org = record(last_name="ACME", address="1 MAIN", city="X", state="IL", zip="60601", fein="1")
    assert parse_record(1, org, "full").ok  # an organization (FEIN) needs no first name
    with pytest.raises(ValueError, match="profile"):
        parse_record(1, text, "strict")


def test_wrong_length_and_non_ascii_records():
    assert problems(parse_record(3, record()[:299])) == [
        ("record", "error", "length 299, expected 300")
    ]
    assert problems(parse_record(3, "é" + record()[1:])) == [
        ("record", "error", "non-ASCII characters")
    ]


def test_vin_check_digit_function():
    assert check_digit_ok(GOOD_VIN)
    assert check_digit_ok("ABC")  # no check digit below 17 characters
    assert not check_digit_ok("1HGCM82633A00435I")  # I never occurs in a VIN
    assert vin_junk_reason("1FTRX18L1XKA12345") is None


def lines_of(*records: str, newline: str = "\r\n") -> bytes:
    return "".join(r + newline for r in records).encode("ascii")


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_crlf_and_lf_with_matching_trailer(newline: str):
    data = lines_of(record(), record(vin="ABC123"), layout.format_trailer(2, "20261122"))
    data = data.replace(b"\r\n", newline.encode()) + newline.encode()  # and a blank last line
    parsed = list(iter_bob(io.BytesIO(data)))
    assert [p.line for p in parsed] == [1, 2] and all(p.ok for p in parsed)


def test_trailer_mismatch_and_data_after_trailer_reject_the_file():
    with pytest.raises(BobFileError, match="trailer mismatch: trailer says 3 records, file has 2"):
        list(iter_bob(io.BytesIO(lines_of(record(), record(), layout.format_trailer(3, "")))))
    with pytest.raises(BobFileError, match="data after the trailer"):
        list(iter_bob(io.BytesIO(lines_of(record(), layout.format_trailer(1, ""), record()))))
    with pytest.raises(BobFileError, match="not a number"):
        list(iter_bob(io.BytesIO(lines_of(record(), "TR12x".ljust(300)))))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\r\n\r\n", "empty file"),
        (lines_of(layout.format_trailer(0, "20261122")), "empty file"),
        ("VS12345".encode("utf-16"), "UTF-16"),
        (b"VS12345\x00\x00" * 40, "NUL"),
        (bytes(range(256)) * 20, "not a text file"),
        (lines_of(*[record()] * 20) + b"\x00" * 4, "NUL bytes on line 21"),
    ],
)
def test_files_that_are_rejected_whole(data: bytes, reason: str):
    with pytest.raises(BobFileError, match=reason):
        list(iter_bob(io.BytesIO(data)))


def test_a_file_without_line_breaks_is_read_in_bounded_pieces():
    data = b"VS" + b"1" * 5_000_000  # one 5 MB "line"
    parsed = list(iter_bob(io.BytesIO(data + b"\n" + lines_of(record()))))
    assert len(parsed) == 2
    assert parsed[0].issues[0].reason.startswith("length 1024")
    assert parsed[1].ok and parsed[1].line == 2


def test_fixture_files():
    good = list(read_bob(FIXTURES / "Acme 20261101.txt"))
    assert len(good) == 20 and all(p.ok for p in good)
    assert looks_like_bob(FIXTURES / "Acme 20261101.txt")
    mixed = list(read_bob(FIXTURES / "Mixed 20261101.txt"))
    assert [p.line for p in mixed if not p.ok] == [3, 5]


# --- round trip: the layout's formatter and the parser agree --------------------------------

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


def _trimmed(max_size: int, min_size: int = 0):
    return st.text(_PRINTABLE, min_size=min_size, max_size=max_size).map(str.strip)


_vin17 = st.text(st.sampled_from("ABCDEFGHJKLMNPRSTUVWXYZ0123456789"), min_size=17, max_size=17)
_short_vin = st.text(st.sampled_from(_ALNUM), min_size=2, max_size=16).filter(
    lambda v: len(set(v)) > 1 and vin_junk_reason(v) is None
)
_dates = st.dates(date(1900, 1, 1), date(9999, 12, 31))


@st.composite
def bob_values(draw) -> dict[str, str]:
    effective = draw(_dates)
    expiration = draw(st.none() | st.dates(effective, date(9999, 12, 31)))
    return {
        "policy_type": draw(st.sampled_from(["VS", "NS"])),
        "naic": draw(st.text(st.sampled_from("0123456789"), min_size=5, max_size=5)),
        "policy_number": draw(_trimmed(30, 1).filter(lambda s: any(c.isalnum() for c in s))),
        "effective_date": effective.strftime("%Y%m%d"),
        "vin": draw(
            _vin17.map(with_check_digit).filter(lambda v: vin_junk_reason(v) is None) | _short_vin
        ),
        "last_name": draw(_trimmed(40)),
        "first_name": draw(_trimmed(40)),
        "fein": draw(_trimmed(9)),
        "address": draw(_trimmed(50)),
        "city": draw(_trimmed(35)),
        "state": draw(st.sampled_from(["", "IL", "NY"])),
        "zip": draw(st.sampled_from(["", "60601", "02134"])),
        "commercial": draw(st.sampled_from(["", "Y", "N"])),
        "expiration_date": expiration.strftime("%Y%m%d") if expiration else "",
    }


@settings(max_examples=200, deadline=None)
@given(bob_values())
def test_format_then_parse_gives_the_same_record(values: dict[str, str]):
    text = layout.format_record(values)
    assert len(text) == layout.RECORD_LENGTH
    parsed = parse_record(1, text)
    assert parsed.ok, parsed.issues
    assert parsed.issues == []
    assert {k: v for k, v in parsed.record.fields.items() if v} == {
        k: v for k, v in values.items() if v
    }
    assert parsed.record.effective_date.strftime("%Y%m%d") == values["effective_date"]


def test_format_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match="longer than 5"):
        layout.format_record({"naic": "123456"})
    with pytest.raises(ValueError, match="cannot carry"):
        layout.format_record({"city": "A\r\nB"})
    assert layout.format_trailer(7, "20261122") == "TR00000000000720261122".ljust(300)


HEADER = "HD" + "ACME 20261122".ljust(layout.RECORD_LENGTH - 2)


@pytest.mark.parametrize("header", [HEADER, "HD", "HDR ACME 20261122"])
def test_a_header_record_is_skipped_not_counted(header: str):
    data = lines_of(header, record(), record(vin="ABC123"), layout.format_trailer(2, "20261122"))
    parsed = list(iter_bob(io.BytesIO(data)))
    assert [p.line for p in parsed] == [2, 3] and all(p.ok for p in parsed)


def test_a_header_anywhere_but_first_is_a_bad_record():
    parsed = list(iter_bob(io.BytesIO(lines_of(record(), HEADER))))
    assert parsed[1].record is None and parsed[1].issues[0].field == "policy type"


def test_a_file_with_only_a_header_is_empty():
    with pytest.raises(BobFileError, match="empty file"):
        list(iter_bob(io.BytesIO(lines_of(HEADER))))


def test_issues_carry_their_records_naic_when_readable():
    (ok_naic,) = list(iter_bob(io.BytesIO(lines_of(record(vin="BAD-VIN")))))
    assert ok_naic.issues and {i.naic for i in ok_naic.issues} == {record()[2:7]}
    bad = record()[:2] + "12X45" + record()[7:]
    (unreadable,) = list(iter_bob(io.BytesIO(lines_of(bad))))
    assert unreadable.issues and {i.naic for i in unreadable.issues} == {None}
