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
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import SQLAlchemyError

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


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value.strip()[:size]


class AuditWriter:
    def __init__(self, engine: Engine, flush_seconds: float = 0.5, batch_size: int = 500) -> None:
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self._queue: queue.SimpleQueue[AuditEntry] = queue.SimpleQueue()
        self._pending: list[dict[str, object]] = []
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
        # Sleep between flushes rather than wake per row: one large insert per interval keeps
        # the writer off the request threads' backs (and off the GIL).
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

    @staticmethod
    def _row(entry: AuditEntry) -> dict[str, object]:
        row = asdict(entry)
        for key, size in (
            ("requester", 300),
            ("naic", 50),
            ("policy_key", 50),
            ("vin", 50),
            ("verification_date", 40),
            ("request_reason", 40),
        ):
            row[key] = _clip(row[key], size)  # type: ignore[arg-type]
        return row

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            with self.engine.begin() as conn:
                size = self.batch_size
                for start in range(0, len(self._pending), size):
                    conn.execute(insert(AuditRecord), self._pending[start : start + size])
        except SQLAlchemyError as exc:
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
