"""Synthetic, valid book-of-business data for tests, benchmarks and demos (no real people)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path

from olv import iicmva
from olv.bob import layout
from olv.vin import with_check_digit

_SERIES = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # VIN alphabet (no I, O, Q)


def make_vin(naic: str, serial: int, series: int = 0) -> str:
    """A valid VIN, unique per (naic, serial, series) for serials below ten million."""
    return _vin_maker(naic, series)(serial)


def _vin_maker(naic: str, series: int) -> Callable[[int], str]:
    """VINs ``1FT<5 from the NAIC><check>N<7-digit serial>``."""
    model = "".join(_SERIES[int(d) + series % 20] for d in naic)
    stem = f"1FT{model}"

    def make(serial: int) -> str:
        return with_check_digit(f"{stem}0N{serial:07d}")

    return make


def records(
    naic: str, count: int, *, start: int = 0, series: int = 0, prefix: str = "POL"
) -> Iterator[str]:
    """``count`` valid 300-character records for ``naic``.

    Built from a template made by :func:`layout.format_record`, with only the varying fields
    spliced in, so that a million records take seconds, not a minute.
    """
    base = date(2026, 1, 1)
    periods = [((base + timedelta(days=d)), (base + timedelta(days=d + 365))) for d in range(300)]
    dates = [(e.strftime("%Y%m%d"), x.strftime("%Y%m%d")) for e, x in periods]
    template = layout.format_record(
        {
            "policy_type": iicmva.VEHICLE_SPECIFIC,
            "naic": naic,
            "last_name": "SYNTHETIC",
            "first_name": "TEST",
            "city": "SPRINGFIELD",
            "state": "IL",
        }
    )
    f = layout.BY_NAME
    head = template[: f["policy_number"].start - 1]  # policy type and NAIC
    names = template[f["last_name"].start - 1 : f["address"].start - 1]  # names and FEIN
    city_state = template[f["city"].start - 1 : f["zip"].start - 1]
    tail = template[f["expiration_date"].end :]
    gap = template[f["zip"].end : f["expiration_date"].start - 1]  # commercial and filler
    vin = _vin_maker(naic, series)
    for i in range(start, start + count):
        effective, expiration = dates[i % 300]
        yield "".join(
            (
                head,
                f"{prefix}-{series}-{i:09d}".ljust(30),
                effective,
                vin(i).ljust(25),
                names,
                f"{i % 9999 + 1} MAIN ST".ljust(50),
                city_state,
                f"{60000 + i % 1000:05d}",
                gap,
                expiration,
                tail,
            )
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
