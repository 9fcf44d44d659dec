"""The plain-text error report sent back to the insurer: ``<file name>.errors.txt``.

A header with the totals, a blank line, then one line per problem starting with ``line N``
(field, offending value, reason). Problems are streamed to a part file while the data file is
read, so a file with a million bad lines costs disk, not memory; the header is only known at the
end, so the report is assembled then and renamed into place (a reader never sees half of it).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from bob_loader.models import BobFile, BobIssue
from olv.bob.errors import Issue
from olv.db import as_utc

SUFFIX = ".errors.txt"


@dataclass(frozen=True, slots=True)
class ReportHeader:
    """The report's totals. ``bad_records`` is None when it is not known (a header rebuilt
    from the database, which keeps the counts of problems but not of bad records): that line
    is then left out."""

    file: str
    status: str
    reason: str | None
    records: int
    loaded: int
    bad_records: int | None
    errors: int
    warnings: int
    max_error_rate: float
    naics: list[str]
    sha256: str | None
    processed_at: str

    def lines(self) -> list[str]:
        bad = []
        if self.bad_records is not None:
            rate = f"{100 * self.bad_records / self.records:.2f} %" if self.records else "n/a"
            bad.append(
                f"records with errors: {self.bad_records} ({rate}; "
                f"the limit is {100 * self.max_error_rate:.2f} %)"
            )
        return [
            "OLV book-of-business error report",
            f"file: {self.file}",
            f"status: {self.status}",
            f"reason: {self.reason or '-'}",
            f"records: {self.records}",
            f"loaded: {self.loaded}",
            *bad,
            f"errors: {self.errors}",
            f"warnings: {self.warnings}",
            f"NAICs: {', '.join(self.naics) or '-'}",
            f"sha256: {self.sha256 or '-'}",
            f"processed: {self.processed_at}",
        ]


def recorded_header(row: BobFile, max_error_rate: float) -> ReportHeader:
    """The header of a processed file's report, rebuilt from what the loader recorded."""
    processed = as_utc(row.processed_at).isoformat(timespec="seconds") if row.processed_at else "-"
    return ReportHeader(
        file=row.name,
        status=row.status,
        reason=row.reason,
        records=row.records,
        loaded=row.loaded,
        bad_records=None,
        errors=row.errors,
        warnings=row.warnings,
        max_error_rate=max_error_rate,
        naics=[n for n in row.naics.split(",") if n],
        sha256=row.sha256,
        processed_at=processed,
    )


def recorded_issue(row: BobIssue) -> Issue:
    """A problem as the loader recorded it, for its line in a report."""
    severity: Literal["error", "warning"] = "error" if row.severity == "error" else "warning"
    return Issue(row.line, row.field, row.value, row.reason, severity)


def report_path_for(path: Path, report_dir: Path | None) -> Path:
    return (report_dir or path.parent) / (path.name + SUFFIX)


class ReportWriter:
    """Collects problem lines for one data file and writes the report when asked."""

    def __init__(self, path: Path, report_dir: Path | None) -> None:
        self.target = report_path_for(path, report_dir)
        self._part = self.target.with_name("." + self.target.name + ".part")
        self._body: TextIO | None = None

    def add(self, issue: Issue) -> None:
        if self._body is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._body = self._part.open("w", encoding="ascii", errors="backslashreplace")
        self._body.write(issue.report_line())
        self._body.write("\n")

    @property
    def _tmp(self) -> Path:
        return self.target.with_name("." + self.target.name + ".tmp")

    def prepare(self, header: ReportHeader) -> None:
        """Write header and problems in full beside :attr:`target`, not yet under its name:
        a load writes its report before it commits, so that a full disk fails the load (the
        old master stays) rather than losing the report of a load already committed."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        with self._tmp.open("w", encoding="ascii", errors="backslashreplace") as out:
            out.write("\n".join(header.lines()))
            out.write("\n\n")
            if self._body is not None:
                self._body.close()
                self._body = None
                with self._part.open(encoding="ascii") as body:
                    shutil.copyfileobj(body, out)

    def publish(self) -> Path:
        """The prepared report under its name (a rename: no space needed)."""
        os.replace(self._tmp, self.target)
        self.discard()
        return self.target

    def finish(self, header: ReportHeader) -> Path:
        """Write header and problems to :attr:`target` and return it."""
        self.prepare(header)
        return self.publish()

    def discard(self) -> None:
        """Drop the collected lines and any prepared report (no report needed, or the load
        failed)."""
        if self._body is not None:
            self._body.close()
            self._body = None
        self._part.unlink(missing_ok=True)
        self._tmp.unlink(missing_ok=True)
