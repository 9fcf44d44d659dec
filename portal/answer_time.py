"""How fast an insurer must answer: the limits the compliance page and the onboarding test
judge every call by, defined here only.

* ``RULE_SECONDS``  the IICMVA model's rule: an answer within five seconds;
* ``TEXAS_SECONDS`` the stricter rule some states (Texas) apply, reported beside it.
"""

from __future__ import annotations

RULE_SECONDS = 5.0
TEXAS_SECONDS = 1.75
RULE_MS = RULE_SECONDS * 1000
TEXAS_MS = TEXAS_SECONDS * 1000


def label(seconds: float) -> str:
    """``5 s``, ``1.75 s``: how a limit is named on pages and in reports."""
    return f"{seconds:g} s"
