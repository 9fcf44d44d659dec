"""Book-of-business states (Idaho's model) on the same cases: a registration whose VIN is in no
current BoB record for consecutive monthly loads, and that a live broadcast to the insurers
does not confirm, opens a case (activity NIA, "no insurance activity": nothing on file).

Once per month with a load (``olv iies run`` when ``OLV_IIES_BOB_MONITORING`` is on): each
registration's absence count goes up by one if its VIN is in no current record, and back to
nought if it is; at ``OLV_IIES_BOB_MISSING_LOADS`` the insurers that accept a VIN-only
question are asked; nobody confirming opens the case, whose letters and suspension then follow
the cancellation path (grace, first inquiry letter, suspension).

An open case of this kind closes, on any day's run, when the VIN is back in a current book
(activity LOD; the record's effective date tells whether there was a lapse at all), or when an
insurer confirms the vehicle for the day the case opened (activity IPA, no lapse): the insurers
are asked again once a month while the case is open.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import Exists

from bob_loader.models import BobCurrent, BobRecord
from enforcement import casework as cw
from enforcement.case_settings import CaseSettings
from enforcement.case_store import Counts, Writer, load_records, move_record
from enforcement.models import BobAbsence, Case, CoveragePeriod, IiesRunStep
from olv.db import transaction
from portal.insurer_client import InsurerClient
from portal.models import Insurer, Registration
from portal.registry import InsurerInput
from portal.settings import PortalSettings
from portal.soap_wire import Ask
from portal.verdicts import confirmed, usable

BATCH = 1000
UNKNOWN_KEY = "UNKNOWN"


def month_of(day: date) -> str:
    return day.strftime("%Y-%m")


def loaded_this_month(engine: Engine, day: date) -> bool:
    """Whether a book of business became current in ``day``'s month, by ``day``."""
    start = datetime(day.year, day.month, 1, tzinfo=UTC)
    with engine.connect() as conn:
        stamps = conn.scalars(select(BobCurrent.loaded_at)).all()
    return any(start <= _utc(s) and _utc(s).date() <= day for s in stamps)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_month(engine: Engine, day: date, settings: CaseSettings) -> dict[str, int]:
    """Count this month's absences (once a month), then open the cases that are due."""
    month = month_of(day)
    step = f"bob:{month}"
    counted = 0
    with engine.connect() as conn:
        done = conn.scalar(select(IiesRunStep.step).where(IiesRunStep.step == step).limit(1))
    if done is None and loaded_this_month(engine, day):
        counted = _count(engine, day, month)
        with transaction(engine) as session:
            session.add(IiesRunStep(run_date=day, step=step, done_at=datetime.now(UTC), summary=""))
    closed = _close_found(engine, day, settings)
    counts = _open_cases(engine, day, settings)
    return {
        "bob_absent": counted,
        "bob_cases_opened": counts.cases_opened,
        "bob_cases_closed": closed.cases_closed,
        "bob_activities": closed.activities,
        "bob_letters": closed.letters,
    }


def _current_vin(day: date) -> Exists:
    """The registration's VIN is in a current BoB record in force on ``day``."""
    return exists(
        select(BobRecord.id)
        .join(BobCurrent, BobCurrent.file_id == BobRecord.file_id)
        .where(
            BobRecord.vin == Registration.vin,
            BobRecord.effective_date <= day,
            or_(BobRecord.expiration_date.is_(None), BobRecord.expiration_date >= day),
        )
    )


def _count(engine: Engine, day: date, month: str) -> int:
    """One more missing load for each registration absent from every current book."""
    with engine.connect() as conn:
        missing = conn.scalars(
            select(Registration.id).where(~_current_vin(day)).order_by(Registration.id)
        ).all()
    for start in range(0, len(missing), BATCH):
        ids = list(missing[start : start + BATCH])
        with transaction(engine) as session:
            rows = {
                a.registration_id: a
                for a in session.scalars(
                    select(BobAbsence).where(BobAbsence.registration_id.in_(ids))
                )
            }
            for registration_id in ids:
                row = rows.get(registration_id)
                if row is None:
                    session.add(
                        BobAbsence(
                            registration_id=registration_id,
                            missing_loads=1,
                            first_missing_on=day,
                            last_checked_month=month,
                        )
                    )
                elif row.last_checked_month != month:
                    row.missing_loads += 1
                    row.last_checked_month = month
    with transaction(engine) as session:
        # Back in a book: the count starts again.
        session.execute(
            delete(BobAbsence).where(
                BobAbsence.registration_id.in_(select(Registration.id).where(_current_vin(day)))
            )
        )
    return len(missing)


def _open_cases(engine: Engine, day: date, settings: CaseSettings) -> Counts:
    counts = Counts()
    with engine.connect() as conn:
        due = conn.scalars(
            select(BobAbsence.registration_id).where(
                BobAbsence.missing_loads >= settings.bob_missing_loads,
                or_(BobAbsence.broadcast_on.is_(None), BobAbsence.broadcast_on < day),
                ~exists(
                    select(Case.id).where(
                        and_(Case.registration_id == BobAbsence.registration_id),
                        Case.closed_on.is_(None),
                    )
                ),
            )
        ).all()
    insurers = _asked_insurers(engine)
    for start in range(0, len(due), BATCH):
        ids = list(due[start : start + BATCH])
        with transaction(engine) as session:
            asks = {
                rid: (vin, day)
                for rid, vin in session.execute(
                    select(Registration.id, Registration.vin).where(Registration.id.in_(ids))
                )
            }
        confirmed = asyncio.run(_broadcast(insurers, asks)) if insurers else {}
        with transaction(engine) as session:
            records = load_records(session, ids)
            writer = Writer(session, settings, f"run:{day} bob")
            for registration_id in ids:
                absence = session.get(BobAbsence, registration_id)
                if absence is None:
                    continue
                absence.broadcast_on = day
                if registration_id in confirmed:
                    absence.broadcast_status = "Confirmed"
                    continue
                absence.broadcast_status = "Unconfirmed"
                record = records[registration_id]
                opened = cw.Step("NIA", day, cw.NEW, cause="missing from the books of business")
                row = writer.open(record, opened, "BOB", None)
                counts.cases_opened += 1
                writer.steps(record, row, [opened], counts, set())
                row.next_due = cw.next_due(record.engine_case(row), settings)
    return counts


def _asked_insurers(engine: Engine) -> list[InsurerInput]:
    """The insurers a VIN-only question goes to."""
    with transaction(engine) as session:
        return [
            InsurerInput.from_row(row)
            for row in session.scalars(select(Insurer).order_by(Insurer.naic))
            if row.enabled and row.accepts_unknown
        ]


def _close_found(engine: Engine, day: date, settings: CaseSettings) -> Counts:
    """Close the open book-of-business cases whose vehicle is found insured again."""
    counts = Counts()
    with engine.connect() as conn:
        cases = conn.execute(
            select(Case.registration_id, Registration.vin, Case.opened_on, BobAbsence.broadcast_on)
            .join(Registration, Registration.id == Case.registration_id)
            .outerjoin(BobAbsence, BobAbsence.registration_id == Case.registration_id)
            .where(Case.closed_on.is_(None), Case.open_activity == "BOB")
            .order_by(Case.registration_id)
        ).all()
    insurers = _asked_insurers(engine)
    for start in range(0, len(cases), BATCH):
        chunk = cases[start : start + BATCH]
        ids = [c.registration_id for c in chunk]
        with engine.connect() as conn:
            in_book = {
                rid: (naic, policy, effective)
                for rid, naic, policy, effective in conn.execute(
                    select(
                        Registration.id,
                        BobRecord.naic,
                        BobRecord.policy_number,
                        BobRecord.effective_date,
                    )
                    .join(BobRecord, BobRecord.vin == Registration.vin)
                    .join(BobCurrent, BobCurrent.file_id == BobRecord.file_id)
                    .where(
                        Registration.id.in_(ids),
                        BobRecord.effective_date <= day,
                        or_(BobRecord.expiration_date.is_(None), BobRecord.expiration_date >= day),
                    )
                    # the earliest record in force wins (dict keeps the last: sort descending)
                    .order_by(Registration.id, BobRecord.effective_date.desc(), BobRecord.id)
                )
            }
        # Still missing: ask again, once a month, whether it was insured the day the case opened.
        asks = {
            c.registration_id: (c.vin, c.opened_on)
            for c in chunk
            if c.registration_id not in in_book
            and (c.broadcast_on is None or month_of(c.broadcast_on) != month_of(day))
        }
        confirmed = asyncio.run(_broadcast(insurers, asks)) if insurers and asks else {}
        with transaction(engine) as session:
            for registration_id in asks:
                absence = session.get(BobAbsence, registration_id)
                if absence is not None:
                    absence.broadcast_on = day
                    absence.broadcast_status = (
                        "Confirmed" if registration_id in confirmed else "Unconfirmed"
                    )
            found = []
            for case in chunk:
                rid = case.registration_id
                if rid in in_book:
                    naic, policy, effective = in_book[rid]
                    # Known insured from the record's date up to this load, no further: a
                    # later absence is a new question.
                    period = CoveragePeriod(registration_id=rid, naic=naic,
                                            policy_number=policy, starts=effective,
                                            ends=day + timedelta(days=1), source="bob")  # fmt: skip
                elif rid in confirmed:
                    opened, naic = case.opened_on, confirmed[rid]
                    period = CoveragePeriod(registration_id=rid, naic=naic, policy_number=None,
                                            starts=opened, ends=opened + timedelta(days=1),
                                            source="live")  # fmt: skip
                else:
                    continue
                session.add(period)
                found.append(rid)
            if not found:
                continue
            session.flush()
            records = load_records(session, found)
            writer = Writer(session, settings, f"run:{day} bob")
            writer.reserve_doc_ids(len(found))
            for rid in found:
                counts.add(
                    move_record(session, records[rid], day, settings, f"run:{day} bob", (), writer)
                )
    return counts


async def _broadcast(
    insurers: list[InsurerInput], asks: dict[int, tuple[str, date]]
) -> dict[int, str]:
    """The registrations some insurer confirms for a VIN-only question (VIN, on the date
    given), each with the NAIC of the first insurer that did."""
    portal = PortalSettings()
    client = InsurerClient(None, portal)
    limit = asyncio.Semaphore(portal.batch_concurrency)

    async def one(registration_id: int, vin: str, day: date) -> tuple[int, str] | None:
        async with limit:
            for insurer in insurers:
                ask = Ask(insurer.naic, UNKNOWN_KEY, vin, day, "VEHREG", portal.state,
                          portal.requestor)  # fmt: skip
                call = await client.verify(insurer, ask, portal.budget_seconds)
                if usable(call) and confirmed(call):
                    return registration_id, insurer.naic
        return None

    try:
        found = await asyncio.gather(*(one(r, v, d) for r, (v, d) in asks.items()))
    finally:
        await client.aclose()
    return dict(f for f in found if f is not None)
