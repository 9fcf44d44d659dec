"""Errors of the book-of-business loader.

``BobFileError`` — the file as a whole cannot be used (empty, not text, trailer mismatch);
the whole file is rejected. Per-record problems are not exceptions but :class:`Issue` values
collected by the parser, so one bad record never stops the rest of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from olv.errors import OlvError


class BobFileError(OlvError):
    """The whole file is rejected; ``reason`` is the text for the error report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Issue:
    line: int
    field: str
    value: str
    reason: str
    severity: Literal["error", "warning"] = "error"
    naic: str | None = None  # the record's NAIC, when that field was readable

    def report_line(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"line {self.line}: {self.field}: {self.value!r}: {tag}{self.reason}"
