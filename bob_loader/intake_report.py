"""Error reports the intake writes itself (the loader writes the others): a file rejected for
its account's NAIC binding, and a file an unexpected error stopped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bob_loader.intake_claims import Claim
from bob_loader.report import ReportHeader, ReportWriter
from olv.bob.errors import Issue


def write_claim_report(
    c: Claim,
    directory: Path,
    status: str,
    reason: str,
    issues: Sequence[Issue] = (),
    *,
    naics: Sequence[str] = (),
) -> Path:
    """``<name>.errors.txt`` in ``directory``: a header saying nothing was loaded, the issues."""
    writer = ReportWriter(c.file, directory)
    for issue in issues:
        writer.add(issue)
    header = ReportHeader(
        file=c.name,
        status=status,
        reason=reason,
        records=0,
        loaded=0,
        bad_records=len(issues),
        errors=len(issues),
        warnings=0,
        max_error_rate=0.0,
        naics=list(naics),
        sha256=None,
        processed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return writer.finish(header)
