"""Mandatory verifications (MVF) to insurers: a CSV in the insurer's SFTP outbox, written with
its returns (:mod:`enforcement.intake`), and ``olv iies mvf --naic N`` for the rest.

A row carries what the insurer needs to find its policy and answer with an NBS (confirmed) or
NIS (not insured) quoting the tracking number: the vehicle, the plate, the policy number and
the date to confirm. No registrant data leaves the state in it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select, update

from enforcement.models import MvfRequest
from olv.db import transaction
from portal.csv_cells import cell
from portal.models import Registration

HEADER = (
    "tracking_number",
    "naic",
    "policy_number",
    "effective_date",
    "vin",
    "plate",
    "state",
    "due_on",
)


def pending(engine: Engine, naic: str) -> Iterator[dict[str, str]]:
    """The insurer's MVFs waiting for an answer (asked live ones are answered already)."""
    with transaction(engine) as session:
        rows = session.execute(
            select(MvfRequest, Registration)
            .join(Registration, Registration.id == MvfRequest.registration_id)
            .where(
                MvfRequest.naic == naic,
                MvfRequest.live_status.is_(None),
                MvfRequest.answer.is_(None),
            )
            .order_by(MvfRequest.id)
        ).all()
        for mvf, registration in rows:
            yield {
                "tracking_number": mvf.tracking_number,
                "naic": mvf.naic,
                "policy_number": mvf.policy_number or "",
                "effective_date": mvf.effective_date.isoformat(),
                "vin": registration.vin,
                "plate": registration.plate,
                "state": registration.state,
                "due_on": mvf.due_on.isoformat(),
            }


def write_outbox(
    engine: Engine, naic: str, outbox: Path, now: datetime | None = None
) -> Path | None:
    """Every MVF of ``naic`` not yet sent, as one CSV in ``outbox``; None if none. The file
    appears whole, and only then are its rows marked sent (a crash sends them again)."""
    now = now or datetime.now(UTC)
    with transaction(engine) as session:
        unsent = session.execute(
            select(MvfRequest.id, MvfRequest.tracking_number).where(
                MvfRequest.naic == naic,
                MvfRequest.live_status.is_(None),
                MvfRequest.returned_at.is_(None),
            )
        ).all()
    if not unsent:
        return None
    wanted = {tracking for _, tracking in unsent}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    for row in pending(engine, naic):
        if row["tracking_number"] in wanted:
            writer.writerow({k: cell(v) for k, v in row.items()})
    target = outbox / f"IIES-MVF {naic} {now:%Y%m%d%H%M%S}.csv"
    partial = target.with_name(f".{target.name}.part")
    partial.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(partial, target)
    with transaction(engine) as session:
        session.execute(
            update(MvfRequest)
            .where(MvfRequest.id.in_([i for i, _ in unsent]))
            .values(returned_at=now)
        )
    return target
