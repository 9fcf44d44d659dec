"""The database side of a load: file rows, the generation swap and the clean-up after it.

See ``bob_loader.models`` for the generation scheme these functions maintain.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from bob_loader.models import BobCurrent, BobFile, BobIssue, BobRecord
from olv.bob.errors import Issue

log = logging.getLogger(__name__)

FILES = BobFile.__table__


@dataclass
class Tally:
    """What one pass over a file found: the counts its ``bob_file`` row records."""

    records: int = 0
    bad_records: int = 0
    errors: int = 0
    warnings: int = 0
    per_naic: dict[str, int] = field(default_factory=dict)
    stored: list[Issue] = field(default_factory=list)  # capped copy for the bob_issue table
    conflict: str | None = None  # the conflict-rule rejection, once one is seen

    @property
    def loaded(self) -> int:
        return sum(self.per_naic.values())

    @property
    def naics(self) -> list[str]:
        return sorted(self.per_naic)


def register(
    engine: Engine, name: str, digest: str, size: int, account: str | None
) -> tuple[int, Row[Any] | None]:
    """The file's row id, set to ``loading``; or the earlier accepted row for a duplicate.

    ``name`` is the file's displayable name (:func:`bob_loader.intake_claims.safe_name`).
    """
    try:
        return _register_once(engine, name, digest, size, account)
    except IntegrityError:
        # A concurrent delivery of the same bytes inserted the row first; now it is found.
        return _register_once(engine, name, digest, size, account)


def _register_once(
    engine: Engine, name: str, digest: str, size: int, account: str | None
) -> tuple[int, Row[Any] | None]:
    with engine.begin() as conn:
        row = conn.execute(select(FILES).where(FILES.c.sha256 == digest)).one_or_none()
        values = {
            "name": name,
            "size": size,
            "account": account,
            "status": "loading",
            "reason": None,
            "received_at": now(),
            "processed_at": None,
        }
        if row is None:
            file_id = conn.execute(
                insert(BobFile).values(
                    sha256=digest, naics="", records=0, loaded=0, errors=0, warnings=0, **values
                )
            ).inserted_primary_key[0]
            return int(file_id), None
        if row.status == "accepted":
            return row.id, row
        # "loading" (a killed or failed run) or "rejected" (redelivered): validate it again.
        # The status condition matters when a concurrent load of the same bytes holds the row:
        # this UPDATE waits for it and, if that load was accepted, must not reopen the file.
        taken = conn.execute(
            update(BobFile)
            .where(BobFile.id == row.id, BobFile.status != "accepted")
            .values(**values)
        ).rowcount
        if taken == 0:
            return row.id, conn.execute(select(FILES).where(FILES.c.id == row.id)).one()
        return row.id, None


def accepted_row(conn: Connection, file_id: int) -> Row[Any] | None:
    """The file's row when it is already accepted, else None.

    On PostgreSQL this also locks the row, so concurrent loads of the same bytes take turns;
    SQLite has one writer at a time anyway.
    """
    row = conn.execute(select(FILES).where(FILES.c.id == file_id).with_for_update()).one()
    return row if row.status == "accepted" else None


def swap(conn: Connection, file_id: int, per_naic: dict[str, int]) -> None:
    """Point each NAIC of the file at it; sorted, so concurrent loads lock in the same order."""
    loaded_at = now()
    table = BobCurrent.__table__
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for naic in sorted(per_naic):
        values = {"file_id": file_id, "records": per_naic[naic], "loaded_at": loaded_at}
        stmt = dialect.insert(table).values(naic=naic, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=["naic"], set_=values))


def finish_file_row(
    conn: Connection, file_id: int, status: str, reason: str | None, tally: Tally
) -> None:
    conn.execute(delete(BobIssue).where(BobIssue.file_id == file_id))
    if tally.stored:
        conn.execute(
            insert(BobIssue),
            [
                {
                    "file_id": file_id,
                    "line": i.line,
                    "field": i.field[:40],
                    "value": i.value[:300],
                    "reason": i.reason[:200],
                    "severity": i.severity,
                    "naic": i.naic,
                }
                for i in tally.stored
            ],
        )
    conn.execute(
        update(BobFile)
        .where(BobFile.id == file_id)
        .values(
            status=status,
            reason=reason,
            naics=",".join(tally.naics),
            records=tally.records,
            loaded=tally.loaded if status == "accepted" else 0,
            errors=tally.errors,
            warnings=tally.warnings,
            processed_at=now(),
        )
    )


def collect_garbage(engine: Engine, naics: list[str]) -> None:
    """Delete the generations of these NAICs that no pointer names any more.

    The pointer is read inside the statement, so a concurrent load that has just become the
    master is never touched; rows of a load still in flight are invisible here anyway.
    """
    started = time.perf_counter()
    deleted = 0
    for naic in naics:
        current = select(BobCurrent.file_id).where(BobCurrent.naic == naic)
        with engine.begin() as conn:
            result = conn.execute(
                delete(BobRecord).where(
                    BobRecord.naic == naic, BobRecord.file_id != current.scalar_subquery()
                )
            )
            deleted += max(result.rowcount, 0)
    if deleted:
        log.info(
            "superseded bob records deleted",
            extra={"rows": deleted, "seconds": round(time.perf_counter() - started, 2)},
        )


def refresh_statistics(engine: Engine) -> None:
    """PostgreSQL plans VIN lookups from table statistics; after a bulk load they are stale
    (autovacuum catches up only later) and the planner would scan the table instead of using
    the VIN index. ANALYZE samples a fixed number of rows, so this stays cheap."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE bob_record")


def now() -> datetime:
    return datetime.now(UTC)
