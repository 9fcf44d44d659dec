"""Values in addresses that the pages share; a bad one is refused naming its parameter."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Path

from portal.errors import invalid

# A row number in a path (/admin/users/{user_id}/…): within what both databases can compare,
# so a 30-digit number is a 422, not an overflow inside the driver.
RowNumber = Annotated[int, Path(ge=1, le=2**63 - 1)]


def day(name: str, text: str | None) -> date | None:
    """``text`` as a date (YYYY-MM-DD), or None when it is empty."""
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise invalid(name, "a date YYYY-MM-DD") from None
