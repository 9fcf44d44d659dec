"""Optional binding of intake accounts to NAICs (``OLV_INTAKE_ACCOUNT_NAICS``).

A file that carries a NAIC its account is not bound to is rejected whole, before any of it is
loaded, with a report listing the offending lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from bob_loader.files import open_regular
from bob_loader.intake_claims import Claim, SavedOutcome, save_outcome
from bob_loader.intake_report import write_claim_report
from olv import normalize
from olv.bob import layout
from olv.bob.errors import Issue
from olv.bob.lines import capped_lines
from olv.bob.parser import MAX_LINE

_TRAILER = layout.TRAILER_TAG.encode("ascii")


def unbound_naics(path: Path, allowed: set[str]) -> list[tuple[int, str]]:
    """(line, NAIC) of records whose well-formed NAIC the account is not bound to.

    Malformed NAICs are left to the loader's validation, which reports them anyway.
    """
    naic = layout.BY_NAME["naic"].slice
    found = []
    with open_regular(path) as stream:
        for number, raw, _overlong in capped_lines(stream, MAX_LINE):
            if raw.startswith(_TRAILER):
                continue
            value = raw[naic].decode("latin-1")
            if normalize.is_naic(value) and value not in allowed:
                found.append((number, value))
    return found


def reject_unbound(c: Claim, allowed: set[str], staging: Path) -> bool:
    """Reject a file carrying NAICs its account is not bound to, without loading any of it."""
    try:
        found = unbound_naics(c.file, allowed)
    except OSError:
        return False  # unreadable or not a regular file: the loader rejects it, with a report
    if not found:
        return False
    naics = sorted({n for _, n in found})
    reason = (
        f"NAIC(s) {', '.join(naics)} not allowed for account {c.account.name} "
        f"(allowed: {', '.join(sorted(allowed))})"
    )
    issues = [
        Issue(line, "NAIC", value, f"not allowed for account {c.account.name}")
        for line, value in found
    ]
    report = write_claim_report(c, staging, "rejected", reason, issues, naics=naics)
    os.replace(report, c.report)
    save_outcome(c, SavedOutcome("rejected", naics, 0, len(found), 0, reason))
    return True
