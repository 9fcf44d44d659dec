"""CSV downloads open as text in a spreadsheet, never as a formula (portal/csv_cells.py)."""

from __future__ import annotations

import pytest

from portal.csv_cells import cell


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\t=1+1", "\r=1+1", "\uff1dHYPERLINK()", "\uff20x"],
)
def test_formula_starts_get_an_apostrophe(value: str) -> None:
    assert cell(value) == "'" + value


@pytest.mark.parametrize(("value", "expected"), [("ABC123", "ABC123"), (None, ""), (12.5, 12.5)])
def test_everything_else_is_left_as_it_is(value: object, expected: object) -> None:
    assert cell(value) == expected
