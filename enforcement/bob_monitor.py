"""Book-of-business states (Idaho's model) on the same cases: a registration whose VIN is in no
current BoB record for consecutive monthly loads, and that a live broadcast to the insurers
does not confirm, opens a case (activity NIA, "no insurance activity": nothing on file).

Once per month with a load (``olv iies run`` when ``OLV_IIES_BOB_MONITORING`` is on): each
registration's absence count goes up by one if its VIN is in no current record, and back to
nought if it is; at ``OLV_IIES_BOB_MISSING_LOADS`` the insurers that accept a VIN-only
question are asked; nobody confirming opens the case, whose letters and suspension then follow
the cancellation path (grace, first inquiry letter, suspension).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.expression import Exists

from bob_loader.models import BobCurrent, BobRecord
from enforcement import casework as cw
from enforcement.case_settings import CaseSettings
from enforcement.case_store import Counts, Writer, load_records
from enforcement.models import BobAbsence, Case, IiesRunStep
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
    counts = _open_cases(engine, day, settings)
    return {"bob_absent": counted, "bob_cases_opened": counts.cases_opened}


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
    with transaction(engine) as session:
        insurers = [
            InsurerInput.from_row(row)
            for row in session.scalars(select(Insurer).order_by(Insurer.naic))
            if row.enabled and row.accepts_unknown
        ]
    for start in range(0, len(due), BATCH):
        ids = list(due[start : start + BATCH])
        with transaction(engine) as session:
            vins = dict(
                session.execute(
                    select(Registration.id, Registration.vin).where(Registration.id.in_(ids))
                ).all()
            )
        confirmed = asyncio.run(_broadcast(insurers, vins, day)) if insurers else set()
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


async def _broadcast(insurers: list[InsurerInput], vins: dict[int, str], day: date) -> set[int]:
    """The registrations some insurer confirms for a VIN-only question on ``day``."""
    portal = PortalSettings()
    client = InsurerClient(None, portal)
    limit = asyncio.Semaphore(portal.batch_concurrency)

    async def one(registration_id: int, vin: str) -> int | None:
        async with limit:
            for insurer in insurers:
                ask = Ask(insurer.naic, UNKNOWN_KEY, vin, day, "VEHREG", portal.state,
                          portal.requestor)  # fmt: skip
                call = await client.verify(insurer, ask, portal.budget_seconds)
                if usable(call) and confirmed(call):
                    return registration_id
        return None

    try:
        found = await asyncio.gather(*(one(r, v) for r, v in vins.items()))
    finally:
        await client.aclose()
    return {r for r in found if r is not None}
