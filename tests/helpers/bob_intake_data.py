"""Book-of-business test files for the intake tests, written through the one layout table."""

from __future__ import annotations

from pathlib import Path

from olv.bob import layout
from olv.vin import with_check_digit


def vin(seed: int) -> str:
    """A 17-character VIN with a correct check digit (so the loader adds no warning)."""
    return with_check_digit(f"1FTFW1E50A{seed:07d}")


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
