"""The day's mail (``olv iies letters --date D -o DIR``) and mail that came back (UND).

Letters are decided by the run (a ``letters`` row with its Document ID and the addressee as it
stood); this module prints them. Printing the same day again writes the same letters again:
the Document IDs do not change, so a reprint is the same mail.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from enforcement import casework
from enforcement import letters as pdf
from enforcement.models import Activity, IiesTransaction, Letter, MvfRequest
from enforcement.models import Case as CaseRow
from olv.db import transaction
from olv.errors import OlvError


class UnknownDocument(OlvError):
    """No letter has this Document ID (exit 1)."""


def write_day(engine: Engine, day: date, directory: Path) -> dict[str, Any]:
    """Render every letter dated ``day`` into ``directory`` with its ``mailing.csv``."""
    with transaction(engine) as session:
        rows = session.scalars(
            select(Letter)
            .where(Letter.letter_date == day)
            .order_by(Letter.created_at, Letter.doc_id)
        ).all()
        case_ids = {r.case_id for r in rows if r.case_id is not None}
        cases = {c.id: c for c in session.scalars(select(CaseRow).where(CaseRow.id.in_(case_ids)))}
        mvf_naic = {
            m.case_id: m.naic
            for m in session.scalars(
                select(MvfRequest).where(MvfRequest.case_id.in_(case_ids)).order_by(MvfRequest.id)
            )
        }
        vehicles = _vehicles(session, {r.registration_id for r in rows})
        batch = [
            pdf.Letter(
                doc_id=row.doc_id,
                kind=casework.LETTERS[row.type],
                mailed=row.letter_date,
                name=row.addressee,
                address1=row.address1 or "",
                address2=row.address2 or "",
                city=row.city or "",
                zip=row.zip or "",
                plate=row.plate,
                plate_state=row.state,
                vin=row.vin,
                vehicle=vehicles.get(row.registration_id, ""),
                matter_date=_matter_date(cases.get(row.case_id or -1), row.letter_date),
                respond_by=row.respond_by,
                insurer=mvf_naic.get(row.case_id, "") if row.type == "LNI" else "",
            )
            for row in rows
        ]
    csv_path, count = pdf.write_day(batch, directory)
    return {"date": day.isoformat(), "letters": count, "mailing": str(csv_path)}


def _matter_date(case: CaseRow | None, fallback: date) -> date:
    if case is None:
        return fallback
    return case.lapse_starts or case.opened_on


def _vehicles(session: Any, registration_ids: set[int]) -> dict[int, str]:
    """Model year and make as the latest filing on each registration gives them."""
    found: dict[int, str] = {}
    for registration_id, year, make in session.execute(
        select(IiesTransaction.registration_id, IiesTransaction.vehicle_year, IiesTransaction.make)
        .where(IiesTransaction.registration_id.in_(registration_ids))
        .order_by(IiesTransaction.id)
    ):
        text = " ".join(part for part in (year, make) if part)
        if text:
            found[registration_id] = text
    return found


def undeliverable(engine: Engine, doc_id: str, day: date, who: str) -> dict[str, Any]:
    """Record mail returned as undeliverable: an UND activity, once per letter."""
    with transaction(engine) as session:
        letter = session.get(Letter, doc_id)
        if letter is None:
            raise UnknownDocument(f"no letter has Document ID {doc_id}")
        if letter.undeliverable_on is None:
            letter.undeliverable_on = day
            session.add(
                Activity(
                    registration_id=letter.registration_id,
                    case_id=letter.case_id,
                    activity_date=day,
                    code="UND",
                    reason=None,
                    doc_id=doc_id,
                    case_state=None,
                    caused_by=who[:60],
                    transaction_id=None,
                    recorded_at=datetime.now(UTC),
                )
            )
            recorded = True
        else:
            recorded = False
        return {
            "doc_id": doc_id,
            "undeliverable_on": letter.undeliverable_on.isoformat(),
            "recorded": recorded,
        }
