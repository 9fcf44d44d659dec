"""Synthetic, valid book-of-business data for tests, benchmarks and demos (no real people)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path

from bob_loader import layout
from bob_loader.validate import _TRANSLIT, _WEIGHTS

_SERIES = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # VIN alphabet (no I, O, Q)


def with_check_digit(vin17: str) -> str:
    """The 17-character VIN with its position-9 check digit set correctly."""
    total = sum(_TRANSLIT[c] * w for c, w in zip(vin17, _WEIGHTS, strict=True))
    digit = "X" if total % 11 == 10 else str(total % 11)
    return vin17[:8] + digit + vin17[9:]


def make_vin(naic: str, serial: int, series: int = 0) -> str:
    """A valid VIN, unique per (naic, serial, series)."""
    model = "".join(_SERIES[int(d) + series % 20] for d in naic)  # 5 characters from the NAIC
    return with_check_digit(f"1FT{model}0N{serial:07d}")


def records(
    naic: str, count: int, *, start: int = 0, series: int = 0, prefix: str = "POL"
) -> Iterator[str]:
    """``count`` valid 300-character records for ``naic``."""
    base = date(2026, 1, 1)
    for i in range(start, start + count):
        effective = base + timedelta(days=i % 300)
        yield layout.format_record(
            {
                "policy_type": "VS",
                "naic": naic,
                "policy_number": f"{prefix}-{series}-{i:09d}",
                "effective_date": effective.strftime("%Y%m%d"),
                "vin": make_vin(naic, i, series),
                "last_name": "SYNTHETIC",
                "first_name": "TEST",
                "address": f"{i % 9999 + 1} MAIN ST",
                "city": "SPRINGFIELD",
                "state": "IL",
                "zip": f"{60000 + i % 1000:05d}",
                "expiration_date": (effective + timedelta(days=365)).strftime("%Y%m%d"),
            }
        )


def write_file(
    path: Path,
    lines: Iterable[str],
    *,
    trailer: bool = True,
    trailer_count: int | None = None,
    newline: str = "\r\n",
) -> int:
    """Write records (and a trailer, its count overridable to make a bad file); return count."""
    count = 0
    with path.open("w", encoding="latin-1", newline="") as out:
        for line in lines:
            out.write(line)
            out.write(newline)
            count += 1
        if trailer:
            n = count if trailer_count is None else trailer_count
            out.write(layout.format_trailer(n, "20261122") + newline)
    return count
