"""The sequence rules of SPEC §6, per registration and insurer, over the filings that matched
and posted (dispositions H and R) in arrival order:

* a flat cancel: an XLC effective on the date of the insurer's standing NBS (E60);
* a second XLC with no NBS, REI or REC since the insurer's last XLC (E61);
* a REP that rescinds no standing NBS or REI of the same effective date (E62);
* a REC that rescinds no standing XLC of the same effective date (E63).

A REP or REC takes its filing out of the history, so a cancellation rescinded by a REC no
longer blocks the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

PROOFS = ("NBS", "REI")


@dataclass(slots=True)
class History:
    """The standing filings of one insurer on one registration, oldest first."""

    standing: list[tuple[str, date]] = field(default_factory=list)

    def apply(self, kind: str, effective: date) -> str | None:
        """Apply a filing; returns the edit code that refuses it (and then changes nothing)."""
        if kind in PROOFS:
            self.standing.append((kind, effective))
        elif kind == "XLC":
            if ("NBS", effective) in self.standing:
                return "E60"
            last = next((k for k, _ in reversed(self.standing) if k in (*PROOFS, "XLC")), None)
            if last == "XLC":
                return "E61"
            self.standing.append((kind, effective))
        elif kind in ("REP", "REC"):
            targets = PROOFS if kind == "REP" else ("XLC",)
            for index in range(len(self.standing) - 1, -1, -1):
                if self.standing[index][0] in targets and self.standing[index][1] == effective:
                    del self.standing[index]
                    return None
            return "E62" if kind == "REP" else "E63"
        return None
