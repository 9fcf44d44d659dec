"""Every edit of SPEC §6, one by one: a valid row passes, and each change earns exactly the
code of its rule (enforcement.codes.EDITS)."""

from __future__ import annotations

from datetime import date

import pytest

from enforcement import codes
from enforcement.edits import edit
from olv.vin import with_check_digit
from tests.helpers.iies import NAIC, OTHER_NAIC, VIN_A, row

TODAY = date(2026, 12, 3)


def codes_of(**changes: str) -> list[str]:
    return edit(row(**changes), 2, NAIC, TODAY).codes


def test_a_valid_row_passes() -> None:
    assert codes_of() == []
    assert (
        codes_of(entity_type="2", last_name="FORT ORANGE POWER CORP", first_name="", dob="") == []
    )
    assert codes_of(type="XLC") == []
    assert codes_of(type="NIS", tracking_number="MVF000001") == []
    assert codes_of(type="REP", policy_number="", vehicle_year="", make="", dob="") == []
    assert codes_of(last_name="SMITH-JONES") == []


CASES = [
    # required elements per type
    ("E01", {"txn_id": ""}),
    ("E01", {"txn_id": "X" * 41}),
    ("E02", {"type": "ABC"}),
    ("E03", {"naic": "1234"}),
    ("E04", {"naic": OTHER_NAIC}),
    ("E05", {"effective_date": ""}),
    ("E06", {"policy_number": ""}),
    ("E07", {"policy_type": ""}),
    ("E08", {"entity_type": ""}),
    ("E09", {"last_name": ""}),
    ("E10", {"first_name": ""}),
    ("E11", {"dob": ""}),
    ("E12", {"vin": ""}),
    ("E13", {"vehicle_year": ""}),
    ("E14", {"make": ""}),
    ("E15", {"type": "NIS"}),
    # formats and values
    ("E20", {"last_name": "Smith"}),
    ("E21", {"effective_date": "2026-02-30"}),
    ("E21", {"effective_date": "11/01/2026"}),
    ("E22", {"effective_date": "1900-01-01"}),
    ("E22", {"effective_date": "2027-06-01"}),
    ("E23", {"dob": "1980-13-01"}),
    ("E24", {"dob": "1900-01-01"}),
    ("E24", {"dob": "2030-01-01"}),
    ("E25", {"policy_type": "9"}),
    ("E26", {"entity_type": "3"}),
    ("E27", {"dl_number": "12345"}),
    ("E28", {"fein": "12-34"}),
    ("E29", {"zip": "ABCDE"}),
    ("E30", {"vehicle_year": "1850"}),
    ("E31", {"make": "UNKN"}),
    ("E32", {"plate": "ABCDEFGHIJKLMN"}),
    ("E33", {"policy_number": "P*1"}),
    ("E34", {"policy_type": "4"}),
    # VINs
    ("E40", {"vin": VIN_A[:-1] + "!"}),
    ("E41", {"vin": VIN_A[:-1]}),
    ("E42", {"vin": VIN_A[:8] + "0" + VIN_A[9:]}),
    ("E43", {"vin": "UNKNOWN"}),
    ("E43", {"vin": "FLEET POLICY"}),
    ("E44", {"vin": "11111111111111111"}),
    ("E44", {"vin": "12121212121212121"}),
    ("E45", {"vin": with_check_digit("ABCDEFGHJKLMNPRST"), "vehicle_year": "2003"}),
    ("E46", {"vin": with_check_digit("1HG00000000000000")}),
    # names
    ("E50", {"last_name": "O'BRIEN"}),
    ("E51", {"first_name": "JOHN AND SANDRA"}),
    ("E52", {"last_name": "JONES JR"}),
]


@pytest.mark.parametrize(
    ("code", "changes"), CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)]
)
def test_each_rule_earns_its_code(code: str, changes: dict[str, str]) -> None:
    assert code in codes_of(**changes)
    assert code in codes.EDITS


def test_every_edit_code_is_tested() -> None:
    sequence = {"E60", "E61", "E62", "E63"}  # tests/test_iies_load.py
    assert {c for c, _ in CASES} | sequence == set(codes.EDITS)


def test_a_bad_element_is_kept_cut_and_a_bad_date_is_not_kept() -> None:
    txn = edit(row(policy_number="P" * 80, effective_date="2026-02-30"), 2, NAIC, TODAY)
    assert txn.policy_number == "P" * 50 and txn.effective_date is None
    assert {"E21", "E33"} <= set(txn.codes)


def test_pre_1981_vins_are_shorter_and_carry_no_check_digit() -> None:
    assert codes_of(vin="124379N123456", vehicle_year="1979") == []
    assert "E41" in codes_of(vin="124379N123456", vehicle_year="1990")


def test_the_dealer_dummy_vin_is_accepted() -> None:
    assert codes_of(vin="NYDLR62MCD64TRA66", policy_type="8", make="NONE") == []
