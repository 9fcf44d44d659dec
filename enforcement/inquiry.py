"""Looking a record up (the guide's "IIE Inquiry External"): by VIN (and plate) or by a
letter's Document ID, the registration's case state and activities.

Insurers see a record only when they have filed on it, and only their own filings among its
transaction activities; nobody sees registrant data here. The public status page gets less
still: the case state and the next step, for a Document ID and the plate it was mailed about.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from enforcement.codes import CASE_STATES
from enforcement.models import Activity, IiesTransaction, Letter
from enforcement.models import Case as CaseRow
from olv import normalize
from portal.models import Registration

TRANSACTION_CODES = frozenset({"NBS", "REI", "XLC", "REP", "REC", "NIS"})
NO_OPEN_CASE = "NOC"


POSTED = ("H", "R")  # matched directly, or resolved: the dispositions that are posted


def lookup(
    session: Session,
    *,
    vin: str | None = None,
    plate: str | None = None,
    doc_id: str | None = None,
    naic: str | None = None,
) -> dict[str, Any] | None:
    """The record as ``olv iies case`` prints it, or None (nothing on file, or an insurer
    ``naic`` that has never filed on it)."""
    registration = _registration(session, vin=vin, plate=plate, doc_id=doc_id)
    if registration is None:
        return None
    activities = session.scalars(
        select(Activity)
        .where(Activity.registration_id == registration.id)
        .order_by(Activity.activity_date, Activity.id)
    ).all()
    cases = session.scalars(
        select(CaseRow).where(CaseRow.registration_id == registration.id).order_by(CaseRow.id)
    ).all()
    if not activities and not cases:
        return None
    if naic is not None:
        own = set(
            session.scalars(
                select(IiesTransaction.id).where(
                    IiesTransaction.registration_id == registration.id,
                    IiesTransaction.naic == naic,
                    # Posted filings only: a row refused by an edit (E) still names the
                    # registration it matched, and one made-up transaction that failed a
                    # sequence check opened anyone's record to any insurer.
                    IiesTransaction.disposition.in_(POSTED),
                )
            )
        )
        if not own:
            return None
        activities = [
            a for a in activities if a.code not in TRANSACTION_CODES or a.transaction_id in own
        ]
    return {
        "vin": registration.vin,
        "plate": registration.plate,
        "state": registration.state,
        "case_state": case_state(cases),
        "activities": [
            {
                "code": a.code,
                "date": a.activity_date.isoformat(),
                "reason": a.reason,
                "doc_id": a.doc_id,
            }
            for a in activities
        ],
    }


def case_state(cases: Sequence[CaseRow]) -> str:
    """The open case's state; the last case's when none is open; NOC with no case at all."""
    open_case = next((c for c in cases if c.closed_on is None), None)
    if open_case is not None:
        return open_case.case_state
    return cases[-1].case_state if cases else NO_OPEN_CASE


def _registration(
    session: Session, *, vin: str | None, plate: str | None, doc_id: str | None
) -> Registration | None:
    if doc_id is not None:
        letter = session.get(Letter, doc_id)
        return session.get(Registration, letter.registration_id) if letter else None
    query = select(Registration)
    if vin is not None:
        query = query.where(Registration.vin == normalize.vin(vin))
    if plate is not None:
        query = query.where(Registration.plate == normalize.plate(plate))
    if vin is None and plate is None:
        return None
    candidates = session.scalars(query.order_by(Registration.id)).all()
    if not candidates:
        return None
    # A VIN on several plate records: the one with the latest activity answers.
    latest: dict[int, date] = {}
    for registration_id, day in session.execute(
        select(Activity.registration_id, Activity.activity_date).where(
            Activity.registration_id.in_([c.id for c in candidates])
        )
    ):
        latest[registration_id] = max(day, latest.get(registration_id, day))
    return max(candidates, key=lambda c: (latest.get(c.id, date.min), c.id))


# --- the public status page -------------------------------------------------------------------

NEXT_STEPS = {
    "NEW": "No action is needed yet. If you receive a letter, follow its instructions.",
    "FIQ": "Have your insurance company report your coverage, or enter your insurance card "
    "on the insurance page, by the date on the letter.",
    "SIQ": "Have your insurance company report your coverage by the date on the letter.",
    "SMV": "We are asking your insurance company to confirm your coverage. No action is "
    "needed unless you receive a letter.",
    "IRS": "The registration is suspended. Do not drive the vehicle. Surrender the plates, or "
    "have your insurance company report your coverage.",
    NO_OPEN_CASE: "There is no open case. No action is needed.",
}


def public_status(session: Session, doc_id: str, plate: str) -> dict[str, str] | None:
    """Case state and next step for a Document ID and the plate it was mailed about; None
    when they do not belong together (the same answer as an unknown ID: nothing to probe)."""
    letter = session.get(Letter, doc_id)
    if letter is None or letter.plate != normalize.plate(plate):
        return None
    cases = session.scalars(
        select(CaseRow)
        .where(CaseRow.registration_id == letter.registration_id)
        .order_by(CaseRow.id)
    ).all()
    if letter.case_id is not None:
        cases = [c for c in cases if c.id == letter.case_id] or cases
    state = case_state(cases)
    closed = state not in NEXT_STEPS
    return {
        "case_state": state,
        "description": CASE_STATES.get(state, ""),
        "next_step": NEXT_STEPS[NO_OPEN_CASE] if closed else NEXT_STEPS[state],
    }
