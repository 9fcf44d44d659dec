"""Values in addresses that the pages share; a bad one is refused naming its parameter."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Path

from portal.errors import invalid

# A row number in a path (/admin/users/{user_id}/…): within what both databases can compare,
# so a 30-digit number is a 422, not an overflow inside the driver.
RowNumber = Annotated[int, Path(ge=1, le=2**63 - 1)]


# The dates a filter may name: pages add and subtract days around them (the day after
# ``until``, a default window before it), which must stay within what ``date`` can hold.
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(9998, 12, 31)


def day(name: str, text: str | None) -> date | None:
    """``text`` as a date (YYYY-MM-DD) from FIRST_DAY to LAST_DAY, or None when it is empty."""
    if not text:
        return None
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise invalid(name, "a date YYYY-MM-DD") from None
    if not FIRST_DAY <= value <= LAST_DAY:
        raise invalid(name, f"a date from {FIRST_DAY} to {LAST_DAY}")
    return value
