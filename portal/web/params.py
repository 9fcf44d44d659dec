"""Query-string values the pages share; a bad one is refused naming its parameter."""

from __future__ import annotations

from datetime import date

from portal.errors import invalid


def day(name: str, text: str | None) -> date | None:
    """``text`` as a date (YYYY-MM-DD), or None when it is empty."""
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise invalid(name, "a date YYYY-MM-DD") from None
