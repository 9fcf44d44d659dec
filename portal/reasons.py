"""Reason codes as people read them: 00200809 names with descriptions, whatever the version.

00200510 insurers answer numbers, and three numbers stand for several names (7: NAIC2, PKEY2,
VIN1; 8: VDT1, VIN2, PKEY3). The portal knows what it asked — a valid NAIC the insurer serves,
a date inside the window, a policy key or ``UNKNOWN`` — so it shows the name that fits the
question and lists the others as ``alternatives``:

* asked with ``UNKNOWN``: 7 → VIN1, 8 → VIN2;
* asked with a policy key: 7 → PKEY2, 8 → PKEY3 — except 8 beside 10 (VIN3), which the
  service sends for "VIN on another policy, not covered": 8 → VIN2 there.
"""

from __future__ import annotations

from olv.iicmva import DESCRIPTIONS, Code, codes_for_number
from portal.schemas import Reason

_PREFER_UNKNOWN: tuple[Code, ...] = (Code.VIN1, Code.VIN2)
_PREFER_KEY: tuple[Code, ...] = (Code.PKEY2, Code.PKEY3)


def describe(codes: tuple[str, ...], *, asked_unknown: bool) -> list[Reason]:
    """``codes`` as received (names for 00200809, numbers for 00200510)."""
    reasons: list[Reason] = []
    numbers = set(codes)
    for raw in codes:
        if raw in Code.__members__:
            code = Code(raw)
            reasons.append(Reason(code=code.value, description=DESCRIPTIONS[code]))
            continue
        candidates = codes_for_number(raw)
        if not candidates:
            reasons.append(Reason(code=raw, description="code not defined by IICMVA"))
            continue
        preferred = _PREFER_UNKNOWN if asked_unknown else _PREFER_KEY
        if raw == "8" and "10" in numbers:
            preferred = (Code.VIN2,)
        chosen = next((c for c in preferred if c in candidates), candidates[0])
        reasons.append(
            Reason(
                code=chosen.value,
                description=DESCRIPTIONS[chosen],
                number=raw,
                alternatives=[c.value for c in candidates if c is not chosen],
            )
        )
    return reasons


def unavailable() -> list[Reason]:
    return [Reason(code=Code.SYSU.value, description=DESCRIPTIONS[Code.SYSU])]


def not_found() -> list[Reason]:
    return [Reason(code=Code.VIN1.value, description=DESCRIPTIONS[Code.VIN1])]
