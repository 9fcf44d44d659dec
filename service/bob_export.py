"""``olv bob export``: the insurer's monthly book-of-business file, from its policy store.

It lives with the insurer store, not in ``bob_loader`` (the state side, which never imports the
insurer service); the format itself is the core's :mod:`olv.bob`.

One record per coverage row of the NAIC (a vehicle's continuous coverage period; for ``NS``
policies the policy's), in the layout of :mod:`olv.bob.layout`, CRLF line ends, and a
``TR`` trailer with the record count and today's date. The store holds no insured names or
addresses, so those fields stay blank (the ``minimal`` profile allows that).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, select

from olv import normalize
from olv.bob import layout
from olv.errors import OlvError
from service.models import Coverage, Policy

CRLF = "\r\n"


class ExportError(OlvError):
    """A policy that cannot be written in the fixed-width layout (nothing is written)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; nothing was written")


def _yyyymmdd(value: date | None) -> str:
    return value.strftime("%Y%m%d") if value is not None else ""


def _end(expiration: date | None, cancellation: date | None) -> date | None:
    """The BoB has one end date; a cancellation ends coverage as an expiration does."""
    ends = [d for d in (expiration, cancellation) if d is not None]
    return min(ends) if ends else None


def export_records(engine: Engine, naic: str) -> Iterator[str]:
    """The NAIC's records as 300-character strings, ordered by policy number and start date."""
    query = (
        select(
            Policy.policy_type,
            Policy.policy_number,
            Coverage.vin,
            Coverage.effective_date,
            Coverage.expiration_date,
            Coverage.cancel_date,
        )
        .join(Coverage, Coverage.policy_id == Policy.id)
        .where(Policy.naic == naic)
        .order_by(Policy.policy_number, Coverage.effective_date, Coverage.id)
    )
    with (
        engine.connect() as conn,
        conn.execution_options(stream_results=True, yield_per=5000).execute(query) as rows,
    ):
        for row in rows:
            values = {
                "policy_type": row.policy_type,
                "naic": naic,
                "policy_number": row.policy_number,
                "effective_date": _yyyymmdd(row.effective_date),
                "vin": row.vin or "",
                "expiration_date": _yyyymmdd(_end(row.expiration_date, row.cancel_date)),
            }
            try:
                yield layout.format_record(values)
            except ValueError as exc:
                raise ExportError(f"policy {row.policy_number!r}: {exc}") from None


def export_file(engine: Engine, naic: str, out: Path, today: date | None = None) -> int:
    """Write the file (atomically: a temporary name, then renamed) and return the record count."""
    if not normalize.is_naic(naic):
        raise ExportError(f"NAIC {naic!r} must be 5 digits")
    today = today or date.today()
    tmp = out.with_name("." + out.name + ".tmp")
    count = 0
    try:
        with tmp.open("w", encoding="ascii", newline="") as stream:
            for record in export_records(engine, naic):
                stream.write(record)
                stream.write(CRLF)
                count += 1
            stream.write(layout.format_trailer(count, _yyyymmdd(today)))
            stream.write(CRLF)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return count
