"""Seeding the enforcement tables for the case tests: registrations with registrants and
matched insurer transactions, as the intake leaves them (disposition H, registration set)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from enforcement.models import Activity, IiesFile, IiesTransaction, Registrant
from olv import db
from portal.models import Registration

_txn_numbers = itertools.count(1)


def add_registrant(
    engine: Engine, plate: str, vin: str, state: str = "NY", last: str = "SMITH"
) -> int:
    """A registration and its registrant (an individual with an address); its id."""
    with db.transaction(engine) as session:
        reg = Registration(plate=plate, state=state, vin=vin)
        session.add(reg)
        session.flush()
        session.add(
            Registrant(
                registration_id=reg.id,
                entity_type=1,
                last_name=last,
                first_name="JOHN",
                dob=date(1980, 5, 1),
                address1="1 ELM ST",
                city="ALBANY",
                zip="12207",
                status="active",
            )
        )
        return reg.id


def add_txn(
    engine: Engine,
    registration_id: int | None,
    kind: str,
    naic: str,
    effective: date,
    *,
    disposition: str = "H",
    tracking: str | None = None,
) -> int:
    """One transaction as matched by the intake; its row id."""
    now = datetime.now(UTC)
    with db.transaction(engine) as session:
        file = IiesFile(
            naic=naic, channel="cli", name="test.csv", received_at=now, status="accepted", rows=1
        )
        session.add(file)
        session.flush()
        txn = IiesTransaction(
            file_id=file.id,
            txn_id=f"T{next(_txn_numbers)}",
            type=kind,
            naic=naic,
            effective_date=effective,
            policy_number="POL1",
            policy_type="1",
            entity_type="1",
            last_name="SMITH",
            first_name="JOHN",
            vin="1HGCM82633A004352",
            vehicle_year="2003",
            make="HONDA",
            tracking_number=tracking,
            received_at=now,
            disposition=disposition,
            match_rule="H1" if disposition == "H" else None,
            codes="",
            registration_id=registration_id,
            disposed_at=now,
        )
        session.add(txn)
        session.flush()
        return txn.id


def activities(engine: Engine, registration_id: int) -> list[tuple[str, str, str | None]]:
    """(code, date, case state) of every activity, by date (then as written)."""
    with db.transaction(engine) as session:
        rows = session.scalars(
            select(Activity)
            .where(Activity.registration_id == registration_id)
            .order_by(Activity.activity_date, Activity.id)
        ).all()
        return [(a.code, a.activity_date.isoformat(), a.case_state) for a in rows]


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
