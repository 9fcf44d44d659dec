"""``olv iies run [--date D]``: the daily run (SPEC §6 "Coverage and cases").

1. Unmatched new business is matched again (the intake's ``rematch``, when it has one).
2. Matched transactions go into the coverage timeline of their registration (``posted_on``);
   a cancellation waits for its effective date. Answers carrying an MVF's tracking number
   answer it.
3. Every registration with something new, or with an open case whose next step is due, is
   moved by the case engine.

Steps 2 and 3 run a batch of registrations per database transaction: a crash rolls back only
the batch it was in, and a rerun finds the rest already done (the engine decides nothing twice).
The journal ``iies_run_steps`` records each finished run with its counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm.attributes import set_committed_value

from enforcement.case_settings import CaseSettings
from enforcement.case_store import (
    Counts,
    Writer,
    answer_mvfs,
    due_filter,
    group_by_registration,
    is_due,
    load_records,
    move_record,
    open_lapse,
    write_case_changes,
)
from enforcement.models import Case as CaseRow
from enforcement.models import IiesRunStep, IiesTransaction
from olv.db import among, transaction

BATCH = 2000
STEP = "cases"


def run(
    engine: Engine,
    day: date,
    settings: CaseSettings,
    *,
    batch: int = BATCH,
    after_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the day; the summary of what this call changed. ``after_batch`` (tests) is called
    with each finished batch's number."""
    rematched = _rematch(engine, day)
    counts = Counts()
    ids = _due_registrations(engine, day)
    for number, start in enumerate(range(0, len(ids), batch)):
        counts.add(_batch(engine, ids[start : start + batch], day, settings))
        if after_batch is not None:
            after_batch(number)
    if settings.bob_monitoring:
        from enforcement.bob_monitor import check_month

        bob = check_month(engine, day, settings)
        # Cases opened now get their first step (the grace) from tomorrow's run on.
        counts.cases_opened += bob["bob_cases_opened"]
        counts.cases_closed += bob["bob_cases_closed"]
        counts.activities += bob["bob_activities"]
        counts.letters += bob["bob_letters"]
    summary: dict[str, Any] = {"date": day.isoformat(), **counts.as_dict()}
    if settings.bob_monitoring:
        summary["bob_absent"] = bob["bob_absent"]
    summary["rematched"] = rematched.get("matched", 0) + rematched.get("resolved", 0)
    summary["unresolved_final"] = rematched.get("final", 0)
    _journal(engine, day, summary)
    return summary


def _due_registrations(engine: Engine, day: date) -> list[int]:
    with engine.connect() as conn:
        posting = conn.scalars(
            select(IiesTransaction.registration_id).where(*due_filter(day)).distinct()
        ).all()
        due = conn.scalars(
            select(CaseRow.registration_id)
            .where(CaseRow.closed_on.is_(None), CaseRow.next_due <= day)
            .distinct()
        ).all()
    return sorted({int(i) for i in posting if i is not None} | {int(i) for i in due})


def _batch(engine: Engine, ids: Sequence[int], day: date, settings: CaseSettings) -> Counts:
    counts = Counts()
    with transaction(engine) as session:
        records = load_records(session, ids, registrants=False)
        # The batch's transactions due for posting are among those its records hold: marked
        # posted here in memory, and in the table by one UPDATE (not one per transaction).
        fresh = sorted(
            (t for r in records.values() for t in r.transactions if is_due(t, day)),
            key=lambda t: t.id,
        )
        for txn in fresh:
            set_committed_value(txn, "posted_on", day)
        if fresh:  # by id: exactly those read, whatever arrived since
            session.connection().execute(
                update(IiesTransaction)
                .where(among(session, IiesTransaction.id, [t.id for t in fresh]))
                .values(posted_on=day)
            )
        grouped = group_by_registration(fresh)
        writer = Writer(session, settings, f"run:{day}", defer_activities=True)
        writer.batch = records.values()
        writer.reserve_doc_ids(2 * len(ids))  # a record rarely gets more than one letter a day
        # First pass: the batch's new cases, written together (their ids are needed below).
        for record in records.values():
            record.known_facts = record.facts()
            if record.open_case() is None:
                open_lapse(writer, record, record.known_facts, day, flush=False)
        writer.write_cases()
        for registration_id in ids:
            held = records.get(registration_id)
            if held is None:
                continue
            posted = grouped.get(registration_id, [])
            counts.mvf_answered += answer_mvfs(session, held, day, posted)
            counts.add(move_record(session, held, day, settings, f"run:{day}", posted, writer))
            counts.transactions_matched += len(posted)
        write_case_changes(session)  # before the flush, which would send one UPDATE per case
        session.flush()  # cases opened in the loop get their ids before their activities
        writer.write_activities()
    return counts


def _journal(engine: Engine, day: date, summary: dict[str, Any]) -> None:
    with transaction(engine) as session:
        row = session.get(IiesRunStep, (day, STEP))
        now = datetime.now(UTC)
        if row is None:
            session.add(
                IiesRunStep(run_date=day, step=STEP, done_at=now, summary=json.dumps(summary))
            )
        else:  # a rerun: keep the first run's counts beside the latest time
            row.done_at = now


def _rematch(engine: Engine, day: date) -> dict[str, int]:
    """The intake's daily re-matching of unmatched new business (before posting, so what it
    matches today is posted today)."""
    from enforcement.returns import rematch

    return rematch(engine, day)
