"""CSV cells that a spreadsheet opens as text, never as a formula (the portal's CSV downloads:
the query-log export and the batch answers).

Values come from people (plates, policy numbers typed on a page or in an uploaded CSV) and
from insurers' answers, so any of them may be crafted. A cell whose first character a
spreadsheet would treat as the start of a formula — ``= + - @``, a tab or a carriage return
(OWASP's list), or their full-width forms — gets a leading apostrophe.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def cell(value: Any) -> Any:
    """``None`` → ``""``; a formula-like text → ``'`` + text; anything else as it is."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
