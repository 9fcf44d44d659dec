"""Reading the current book of business: by VIN (``olv bob lookup``, the portal) and per NAIC.

Only rows of the generation that ``bob_current`` points at are current (see
``bob_loader.models``); every query here joins on that pointer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, String, any_, bindparam, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from bob_loader.models import BobCurrent, BobFile, BobRecord
from olv import normalize
from olv.db import CompiledRead, as_utc

# VINs per query: well under SQLite's bound-parameter limit, large enough that 100,000 VINs
# take a hundred round trips.
BATCH = 900

_SELECT_CURRENT = (
    select(
        BobRecord.vin,
        BobRecord.naic,
        BobRecord.policy_number,
        BobRecord.policy_type,
        BobRecord.effective_date,
        BobRecord.expiration_date,
        BobFile.name.label("source_file"),
        BobCurrent.loaded_at,
    )
    .join(
        BobCurrent,
        (BobCurrent.naic == BobRecord.naic) & (BobCurrent.file_id == BobRecord.file_id),
    )
    .join(BobFile, BobFile.id == BobRecord.file_id)
    .order_by(BobRecord.vin, BobRecord.naic, BobRecord.effective_date)
)
# PostgreSQL: one array parameter (an IN list of 900 parameters costs more to bind and plan
# than the index look-ups themselves); SQLite: an expanding IN list.
_BY_VIN_PG = _SELECT_CURRENT.where(
    BobRecord.vin == any_(bindparam("vins", type_=postgresql.ARRAY(String)))
)
_BY_VIN = _SELECT_CURRENT.where(BobRecord.vin.in_(bindparam("vins", expanding=True)))
# One VIN, for :class:`CurrentByVin` (the portal asks it on every query).
_BY_ONE_VIN = _SELECT_CURRENT.where(BobRecord.vin == bindparam("vin"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def find_by_vins(conn: Connection, vins: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Current records for the VINs (normalized with ``olv.normalize.vin``), hits only.

    Each is a dict of JSON-ready values: vin, naic, policy_number, policy_type,
    effective_date, expiration_date (ISO dates or None), source_file, loaded_at.
    Streams: VINs are read and queried one batch at a time.
    """
    batch: list[str] = []
    seen: set[str] = set()
    for raw in vins:
        vin = normalize.vin(raw)
        if not vin or vin in seen:
            continue
        seen.add(vin)
        batch.append(vin)
        if len(batch) >= BATCH:
            yield from _query(conn, batch)
            batch = []
    if batch:
        yield from _query(conn, batch)


def _query(conn: Connection, vins: list[str]) -> Iterator[dict[str, Any]]:
    query = _BY_VIN_PG if conn.dialect.name == "postgresql" else _BY_VIN
    for row in conn.execute(query, {"vins": vins}).mappings():
        yield {key: _jsonable(value) for key, value in row.items()}


class CurrentByVin:
    """The current records of one VIN, like :func:`find_by_vins`, on a DB-API cursor
    (:func:`olv.db.read_cursor`): the same query, without SQLAlchemy's execution layer."""

    def __init__(self, dialect: Dialect) -> None:
        self._read = CompiledRead(_BY_ONE_VIN, dialect)

    def sql_beside(self, column: str) -> str:
        """The same read for the VIN in ``column`` of an enclosing statement (a ``LATERAL``
        join), without parameters: the records of several VINs in one statement."""
        beside = _SELECT_CURRENT.where(BobRecord.vin == literal_column(column))
        return CompiledRead(beside, self._read.dialect).sql

    def records(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """The records from rows of this read's columns, read by the caller (a statement
        that embeds :meth:`sql_beside`)."""
        return _jsonable_rows(self._read.dicts(rows))

    def __call__(self, cursor: Any, vin: str) -> list[dict[str, Any]]:
        return _jsonable_rows(self._read.rows(cursor, vin=vin))

    async def fetch(self, cursor: Any, vin: str) -> list[dict[str, Any]]:
        """The same on an asyncio driver's cursor."""
        return _jsonable_rows(await self._read.arows(cursor, vin=vin))


def _jsonable_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: _jsonable(value) for key, value in row.items()} for row in rows]


def naic_stats(conn: Connection) -> Iterator[dict[str, Any]]:
    """One dict per NAIC with a master: naic, records, file, loaded_at."""
    query = (
        select(
            BobCurrent.naic,
            BobCurrent.records,
            BobFile.name.label("file"),
            BobCurrent.loaded_at,
        )
        .join(BobFile, BobFile.id == BobCurrent.file_id)
        .order_by(BobCurrent.naic)
    )
    for row in conn.execute(query).mappings():
        yield {key: _jsonable(value) for key, value in row.items()}
