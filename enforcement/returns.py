"""What goes back to insurers: per-transaction dispositions (``olv iies returns``, ``GET
/api/v1/iies/returns``, the outbox CSV of SFTP insurers) and the daily re-matching of
unmatched new business that can still change a U into an H or R.

A return line is ``txn_id, disposition, codes, plate``: ``codes`` lists the edit codes of an E
and the criterion (H1-H4) of an H. ``--since D`` gives the transactions whose disposition was
set or changed on or after D, so a re-matched NBS comes back again with its new disposition.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TypedDict

from sqlalchemy import Engine, select, update

from enforcement.load import match_all, sent_of
from enforcement.models import IiesTransaction
from olv import db

BATCH = 2000
OUTBOX_HEADER = ("txn_id", "disposition", "codes", "plate", "type", "effective_date", "ack_id")


class ReturnFields(TypedDict):
    """One transaction's disposition as the insurer gets it back."""

    txn_id: str
    disposition: str
    codes: list[str]
    plate: str | None


def line(txn: IiesTransaction) -> ReturnFields:
    codes = [c for c in txn.codes.split(",") if c]
    if txn.disposition == "H" and txn.match_rule:
        codes = [txn.match_rule]
    return {
        "txn_id": txn.txn_id,
        "disposition": txn.disposition,
        "codes": codes,
        "plate": txn.plate,
    }


def returns(
    engine: Engine, naic: str, since: date | None = None, limit: int | None = None
) -> Iterator[IiesTransaction]:
    """One insurer's transactions, in arrival order, streamed in batches."""
    after = 0
    start = datetime.combine(since, time(), UTC) if since else None
    taken = 0
    while True:
        query = (
            select(IiesTransaction)
            .where(IiesTransaction.naic == naic, IiesTransaction.id > after)
            .order_by(IiesTransaction.id)
            .limit(BATCH)
        )
        if start is not None:
            query = query.where(IiesTransaction.disposed_at >= start)
        with db.transaction(engine) as session:
            rows = list(session.scalars(query))
            session.expunge_all()
        for row in rows:
            if limit is not None and taken >= limit:
                return
            taken += 1
            yield row
        if len(rows) < BATCH:
            return
        after = rows[-1].id


def write_outbox(
    engine: Engine, naic: str, outbox: Path, now: datetime | None = None
) -> Path | None:
    """Write every disposition not yet returned to ``outbox`` as one CSV; None if none.

    The file appears whole (written aside, then renamed) and only then are its rows marked
    returned, so a crash in between sends them again rather than never.
    """
    now = now or datetime.now(UTC)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(OUTBOX_HEADER)
    ids: list[int] = []
    with db.transaction(engine) as session:
        for txn in session.scalars(
            select(IiesTransaction)
            .where(IiesTransaction.naic == naic, IiesTransaction.returned_at.is_(None))
            .order_by(IiesTransaction.id)
        ):
            entry = line(txn)
            writer.writerow(
                [
                    txn.txn_id,
                    txn.disposition,
                    " ".join(entry["codes"]),
                    txn.plate or "",
                    txn.type,
                    txn.effective_date.isoformat() if txn.effective_date else "",
                    txn.file_id,
                ]
            )
            ids.append(txn.id)
    if not ids:
        return None
    target = outbox / f"IIES-RETURNS {naic} {now:%Y%m%d%H%M%S}.csv"
    partial = target.with_name(f".{target.name}.part")
    partial.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(partial, target)
    with db.transaction(engine) as session:
        for start in range(0, len(ids), BATCH):
            session.execute(
                update(IiesTransaction)
                .where(IiesTransaction.id.in_(ids[start : start + BATCH]))
                .values(returned_at=now)
            )
    return target


def rematch(engine: Engine, on: date, now: datetime | None = None) -> dict[str, int]:
    """Re-match every NBS still U and inside its window; make U final after it.

    Called once a day by ``olv iies run``; running it twice for a date changes nothing more.
    Returns counts: ``tried``, ``matched`` (H), ``resolved`` (R), ``final`` (U made final).
    """
    now = now or datetime.now(UTC)
    counts = {"tried": 0, "matched": 0, "resolved": 0, "final": 0}
    after = 0
    while True:
        with db.transaction(engine) as session:
            pending = list(
                session.scalars(
                    select(IiesTransaction)
                    .where(
                        IiesTransaction.disposition == "U",
                        IiesTransaction.type == "NBS",
                        IiesTransaction.rematch_until >= on,
                        IiesTransaction.id > after,
                    )
                    .order_by(IiesTransaction.id)
                    .limit(BATCH)
                )
            )
            if not pending:
                break
            after = pending[-1].id
            counts["tried"] += len(pending)
            for txn, result in zip(
                pending, match_all(session, [sent_of(t) for t in pending]), strict=True
            ):
                if result is None:
                    continue
                rule, hit = result
                txn.disposition = "R" if rule == "R" else "H"
                txn.match_rule = rule
                txn.registration_id = hit.id
                txn.rematch_until = None
                txn.disposed_at = now
                txn.returned_at = None
                counts["resolved" if rule == "R" else "matched"] += 1
    with db.transaction(engine) as session:
        counts["final"] = db.changed_rows(
            session.execute(
                update(IiesTransaction)
                .where(IiesTransaction.disposition == "U", IiesTransaction.rematch_until < on)
                .values(rematch_until=None, disposed_at=now, returned_at=None)
            )
        )
    return counts
