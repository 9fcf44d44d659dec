"""Book-of-business test files for the intake tests, written through the one layout table."""

from __future__ import annotations

from pathlib import Path

from bob_loader import layout
from bob_loader.validate import vin_check_digit_ok


def vin(seed: int) -> str:
    """A 17-character VIN with a correct check digit (so the loader adds no warning)."""
    base = f"1FTFW1E50A{seed:07d}"
    for digit in "0123456789X":
        candidate = base[:8] + digit + base[9:]
        if vin_check_digit_ok(candidate):
            return candidate
    raise AssertionError("unreachable: one check digit always fits")


def record(naic: str, seed: int, *, effective: str = "20240101") -> str:
    return layout.format_record(
        {
            "policy_type": "VS",
            "naic": naic,
            "policy_number": f"POL-{naic}-{seed:06d}",
            "effective_date": effective,
            "vin": vin(seed),
            "last_name": "TESTPERSON",
        }
    )


def write_bob(path: Path, naic: str, good: int, *, bad: int = 0, first: int = 0) -> Path:
    """``good`` valid records of ``naic`` and ``bad`` ones with an impossible effective date."""
    lines = [record(naic, first + i) for i in range(good)]
    lines += [record(naic, first + good + i, effective="20241399") for i in range(bad)]
    path.write_bytes("".join(line + "\r\n" for line in lines).encode("ascii"))
    return path
