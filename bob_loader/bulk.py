"""Bulk writing of master records: the one place that talks to the database drivers directly.

Per-row ORM objects (or even SQLAlchemy Core parameter processing) cost more than parsing the
record, so records go to the driver as plain tuples: ``executemany`` on SQLite, ``COPY`` on
PostgreSQL. Both run inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection

from olv.bob.parser import BobRecord

COLUMNS = (
    "file_id",
    "line",
    "naic",
    "policy_type",
    "policy_number",
    "policy_key",
    "vin",
    "effective_date",
    "expiration_date",
    "commercial",
)
_COLUMN_LIST = ", ".join(COLUMNS)

# SQLite page cache for the loading connection (negative: KiB). The VIN index is filled in
# random order; a cache that holds it avoids re-reading pages, and 96 MiB keeps the loader
# well inside its memory budget.
SQLITE_LOAD_CACHE_KIB = 96 * 1024


class RecordWriter(Protocol):
    def row(self, file_id: int, record: BobRecord) -> tuple[object, ...]: ...

    def write(self, rows: Sequence[tuple[object, ...]]) -> None: ...


class SqliteWriter:
    """``executemany`` in big batches inside one transaction (the caller's)."""

    _SQL = f"INSERT INTO bob_record ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(COLUMNS))})"

    def __init__(self, conn: Connection) -> None:
        self._dbapi = conn.connection.driver_connection
        assert self._dbapi is not None
        self._dbapi.execute(f"PRAGMA cache_size=-{SQLITE_LOAD_CACHE_KIB}")

    @staticmethod
    def row(file_id: int, record: BobRecord) -> tuple[object, ...]:
        # Dates as ISO text: the form SQLAlchemy's SQLite Date type stores and reads back.
        exp = record.expiration_date
        return (
            file_id,
            record.line,
            record.naic,
            record.policy_type,
            record.policy_number,
            record.policy_key,
            record.vin or None,
            record.effective_date.isoformat(),
            exp.isoformat() if exp is not None else None,
            1 if record.commercial else 0,
        )

    def write(self, rows: Sequence[tuple[object, ...]]) -> None:
        self._dbapi.executemany(self._SQL, rows)


class PostgresWriter:
    """``COPY … FROM STDIN`` per batch (psycopg 3); one COPY per batch leaves the connection
    free between batches for the other statements of the load."""

    _SQL = f"COPY bob_record ({_COLUMN_LIST}) FROM STDIN"

    def __init__(self, conn: Connection) -> None:
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        self._cursor = dbapi.cursor()

    @staticmethod
    def row(file_id: int, record: BobRecord) -> tuple[object, ...]:
        return (
            file_id,
            record.line,
            record.naic,
            record.policy_type,
            record.policy_number,
            record.policy_key,
            record.vin or None,
            record.effective_date,
            record.expiration_date,
            record.commercial,
        )

    def write(self, rows: Sequence[tuple[object, ...]]) -> None:
        with self._cursor.copy(self._SQL) as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)


def writer_for(conn: Connection) -> RecordWriter:
    if conn.dialect.name == "sqlite":
        return SqliteWriter(conn)
    if conn.dialect.name == "postgresql":
        return PostgresWriter(conn)
    raise NotImplementedError(f"bulk loading is not implemented for {conn.dialect.name}")
