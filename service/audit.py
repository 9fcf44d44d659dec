"""Audit trail of every SOAP query: batched writes, show and purge.

Rows are queued in memory and written by a background thread every
``OLV_AUDIT_FLUSH_SECONDS`` (default 0.5 s) or every ``OLV_AUDIT_BATCH_SIZE`` rows, in one
multi-row insert. A graceful stop flushes the queue (no row lost); a hard crash (kill -9,
power loss) loses at most the rows of the last flush interval.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError

from olv.db import is_sqlite
from service.models import AuditRecord

log = logging.getLogger(__name__)
_BACKLOG_LIMIT = 200_000  # rows kept in memory while the database is down


@dataclass(slots=True)
class AuditEntry:
    at: datetime
    requester: str
    version: str
    naic: str | None
    policy_key: str | None
    vin: str | None
    verification_date: str | None
    request_reason: str | None
    response_code: str
    reason_codes: str
    latency_ms: float


_COLUMNS = (
    "at, requester, version, naic, policy_key, vin, verification_date, request_reason,"
    " response_code, reason_codes, latency_ms"
)
_INSERT = f"INSERT INTO audit_record ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_COPY = f"COPY audit_record ({_COLUMNS}) FROM STDIN"


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value.strip()[:size]


class AuditWriter:
    """Queues entries in memory; a background thread writes them in one batch per interval.

    The batch goes straight to the DB-API driver with a fixed statement: building it through
    SQLAlchemy cost milliseconds of GIL time per flush, felt by every request in the process.
    """

    def __init__(self, engine: Engine, flush_seconds: float = 0.5, batch_size: int = 500) -> None:
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self._sqlite = is_sqlite(str(engine.url))
        self._sql = _INSERT
        self._queue: queue.SimpleQueue[AuditEntry] = queue.SimpleQueue()
        self._pending: list[tuple[object, ...]] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def record(self, entry: AuditEntry) -> None:
        self._queue.put(entry)

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything queued and stop; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        # Sleep between flushes rather than wake per row: one insert per interval keeps the
        # writer off the request path.
        while not self._stopped.wait(self.flush_seconds):
            self._drain()
            self._flush()
        self._drain()
        self._flush()

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._pending.append(self._row(item))

    def _row(self, e: AuditEntry) -> tuple[object, ...]:
        at: object = e.at
        if self._sqlite:
            # The text form SQLAlchemy's SQLite DateTime type reads back (naive UTC).
            at = e.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return (
            at,
            _clip(e.requester, 300),
            e.version,
            _clip(e.naic, 50),
            _clip(e.policy_key, 50),
            _clip(e.vin, 50),
            _clip(e.verification_date, 40),
            _clip(e.request_reason, 40),
            e.response_code,
            e.reason_codes,
            e.latency_ms,
        )

    def _flush(self) -> None:
        if not self._pending:
            return
        driver_error = self.engine.dialect.loaded_dbapi.Error
        try:
            conn = self.engine.raw_connection()
            try:
                cursor = conn.cursor()
                if self._sqlite:
                    for start in range(0, len(self._pending), self.batch_size):
                        chunk = self._pending[start : start + self.batch_size]
                        cursor.executemany(self._sql, chunk)
                else:
                    # COPY: one stream for the whole batch, rows encoded in C; executemany
                    # held the GIL (and so the request loop) for milliseconds per flush.
                    with cursor.copy(_COPY) as copy:
                        for row in self._pending:
                            copy.write_row(row)
                cursor.close()
                conn.commit()
            finally:
                conn.close()
        except (SQLAlchemyError, driver_error) as exc:
            if len(self._pending) > _BACKLOG_LIMIT:
                dropped = len(self._pending) - _BACKLOG_LIMIT
                del self._pending[:dropped]
                log.error("audit backlog full; oldest rows dropped", extra={"dropped": dropped})
            log.warning(
                "audit write failed; will retry",
                extra={"rows": len(self._pending), "error": type(exc).__name__},
            )
            return
        self._pending.clear()


def _iso(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def show(engine: Engine, vin: str | None = None, since: date | None = None) -> Iterator[str]:
    """Audit rows as JSON lines, oldest first."""
    stmt = select(AuditRecord).order_by(AuditRecord.at, AuditRecord.id)
    if vin:
        from olv.normalize import vin as normal_vin

        stmt = stmt.where(AuditRecord.vin == normal_vin(vin))
    if since:
        stmt = stmt.where(
            AuditRecord.at >= datetime(since.year, since.month, since.day, tzinfo=UTC)
        )
    with engine.connect() as conn:
        for row in conn.execute(stmt).mappings():
            yield json.dumps(
                {
                    "time": _iso(row["at"]),
                    "requester": row["requester"],
                    "version": row["version"],
                    "naic": row["naic"],
                    "policy_key": row["policy_key"],
                    "vin": row["vin"],
                    "verification_date": row["verification_date"],
                    "request_reason": row["request_reason"],
                    "response_code": row["response_code"],
                    "reason_codes": row["reason_codes"].split() if row["reason_codes"] else [],
                    "latency_ms": round(row["latency_ms"], 3),
                }
            )


def purge(engine: Engine, older_than_days: int, now: datetime | None = None) -> int:
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    with engine.begin() as conn:
        return conn.execute(delete(AuditRecord).where(AuditRecord.at < cutoff)).rowcount or 0
