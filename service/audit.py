"""Audit trail of every SOAP query: batched writes, show and purge.

Rows are queued in memory and written by a background thread every
``OLV_AUDIT_FLUSH_SECONDS`` (default 0.5 s) or every ``OLV_AUDIT_BATCH_SIZE`` rows, in one
multi-row insert. A graceful stop flushes the queue (no row lost); a hard crash (kill -9,
power loss) loses at most the rows of the last flush interval.

The request path only ever appends to the queue: it never waits on the writer, whatever the
database does. While the database is down or hung, rows wait in memory, at most
:data:`BACKLOG_LIMIT` per worker process; beyond that new rows are dropped and counted in an
error log line. A write that hangs (a stopped server, a dead link) is cut after
:data:`WRITE_LIMIT_SECONDS` and retried on a new connection, so writing resumes by itself.

The writer thread runs at the lowest priority (nice :data:`IDLE_NICE`, Linux: that thread
only). At full load it used to take a core's share from the event loops for tens of
milliseconds at each flush, and the requests in flight then waited: the service's p99 was
half again as long as without flushes. At low priority it writes in the gaps the loops
leave. Should the gaps not suffice (a machine saturated for long), a second thread at normal
priority writes whatever has waited longer than :data:`CATCH_UP_SECONDS`: rows are late, never
dropped for the priority. A thread cannot raise its priority again without privileges, hence
two threads.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from prometheus_client import Gauge
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import SQLAlchemyError

from olv.db import as_utc, interrupt, is_sqlite, set_local_timeout
from service.models import AuditRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
# Rows kept in memory per worker while the database cannot take them: about a minute of a
# worker's full load, some tens of MB.
BACKLOG_LIMIT = 100_000
WRITE_LIMIT_SECONDS = 10.0  # one transaction of at most _CHUNK rows; normally milliseconds
IDLE_NICE = 19  # the writer thread's nice value: it runs when the event loops leave a core
CATCH_UP_SECONDS = 5.0  # rows older than this are written at normal priority
_CHUNK = 5_000  # rows per transaction, so a large backlog is written in bounded steps

# Reported once a second by each worker's watchdog: all workers' rows, the worst worker's lag.
QUEUED = Gauge(
    "olv_soap_audit_queue_rows",
    "Audit rows queued in memory, not yet written",
    multiprocess_mode="livesum",
)
LAG = Gauge(
    "olv_soap_audit_lag_seconds",
    "How long the oldest unwritten audit row has waited",
    multiprocess_mode="livemax",
)


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
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT = f"INSERT INTO audit_record ({_COLUMNS}) VALUES {_ROW}"
# Rows per SQLite statement: 11 parameters each, under the 999 that older SQLite builds allow.
_ROWS_PER_INSERT = 90
_COPY = f"COPY audit_record ({_COLUMNS}) FROM STDIN"
# Each write leaves its id in audit_write (migration 0013), in the same transaction.
_MARK = "INSERT INTO audit_write (id, at) VALUES (?, ?)"
_FORGET = "DELETE FROM audit_write WHERE id = ? OR at < ?"
_LANDED = "SELECT 1 FROM audit_write WHERE id = ?"
# Longer than any writer waits between a write and its next look at the table: ids of
# processes that stopped are cleared after this.
WRITE_IDS_KEPT = timedelta(days=1)


# The second the last row was made in, with its texts up to the fraction: a row's time was
# the costliest part of making it (isoformat formats every field anew, printf-style: 21,000
# instructions a row, 2 % of a request's), and most rows share their second with the one
# before. One tuple, read and replaced whole, so threads recording at once each see a
# consistent one.
_SECOND: tuple[int, str, str] = (-1, "", "")  # epoch second, SQLite text, COPY text


def _second_of(utc: datetime) -> tuple[int, str, str]:
    global _SECOND
    second = math.floor(utc.timestamp())
    texts = _SECOND
    if texts[0] != second:
        fields = time.gmtime(second)
        texts = _SECOND = (
            second,
            time.strftime("%Y-%m-%d %H:%M:%S.", fields),
            time.strftime("%Y-%m-%dT%H:%M:%S.", fields),
        )
    return texts


def _fraction(utc: datetime) -> str:
    return str(1_000_000 + utc.microsecond)[1:]  # six digits, zeros in front


def _sqlite_time(at: datetime) -> str:
    """The text form SQLAlchemy's SQLite DateTime type reads back (naive UTC):
    "%Y-%m-%d %H:%M:%S.%f"."""
    utc = at if at.tzinfo is UTC else at.astimezone(UTC)
    return _second_of(utc)[1] + _fraction(utc)


def _copy_time(at: datetime) -> str:
    """``at`` as PostgreSQL's COPY reads a timestamptz: ISO 8601 in UTC, microseconds."""
    utc = at if at.tzinfo is UTC else at.astimezone(UTC)
    return f"{_second_of(utc)[2]}{_fraction(utc)}+00:00"


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value.strip()[:size]


class AuditWriter:
    """Queues entries in memory; a background thread writes them in one batch per interval.

    The batch goes straight to the DB-API driver with a fixed statement: building it through
    SQLAlchemy cost milliseconds of GIL time per flush, felt by every request in the process.
    """

    def __init__(
        self,
        engine: Engine,
        flush_seconds: float = 0.5,
        batch_size: int = 500,
        catch_up_seconds: float = CATCH_UP_SECONDS,
    ) -> None:
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.catch_up_seconds = catch_up_seconds
        self.batch_size = batch_size
        self._sqlite = is_sqlite(str(engine.url))
        # Rows as written, appended by the request path and taken by the writer: a deque's
        # append and popleft are atomic, and cheaper than a queue's put and get with its lock.
        # Each row is made on the request path, so the writer holds the GIL for no per-row
        # work: thousands of rows converted in one go kept the event loop waiting for the GIL
        # (a switch interval at a time) at every flush.
        self._rows: deque[tuple[object, ...] | str] = deque()
        self._rows_since = 0.0  # when the oldest row in _rows was made (epoch)
        self._pending: list[tuple[object, ...] | str] = []
        # A write whose commit went unanswered: its id and its rows, the first of _pending.
        self._unanswered: tuple[str, int] | None = None
        self._last_write = ""  # the id of the last write known to be in the table
        self._waiting_since: float | None = None  # when the oldest pending row was made (epoch)
        self._dropped = 0  # counted on the request path, reported by the writer
        self._reported = 0
        self._stopped = threading.Event()
        # The connection of the write in progress and when it is due, for the watchdog.
        self._writing: tuple[object, float] | None = None
        self._writing_lock = threading.Lock()
        self._flushing = threading.Lock()  # one writer at a time: the idle one or catch-up
        self._behind = threading.Event()  # set by the watchdog: rows wait too long
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._catch_up = threading.Thread(
            target=self._catch_up_run, name="audit-catch-up", daemon=True
        )
        self._watchdog = threading.Thread(target=self._watch, name="audit-watchdog", daemon=True)
        self._thread.start()
        self._catch_up.start()
        self._watchdog.start()

    def unwritten(self) -> int:
        """Rows recorded and not yet known to be written: what the backlog limit counts. A
        write's rows count until the writer has seen its commit answered."""
        return len(self._rows) + len(self._pending)

    def record(self, entry: AuditEntry) -> None:
        """Never blocks: a full backlog drops the row (counted, reported by the writer)."""
        if self.unwritten() >= BACKLOG_LIMIT:
            self._dropped += 1
            return
        if not self._rows:
            self._rows_since = time.time()
        self._rows.append(self._row(entry))

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything queued and stop; safe to call more than once.

        A write still hanging after ``timeout`` is cut; rows it could not write are counted
        in an error log line.
        """
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._behind.set()  # wakes the catch-up thread, which then ends
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._cut()
            self._thread.join(1.0)
        unwritten = self.unwritten()
        if unwritten:
            log.error("audit rows not written at stop", extra={"rows": unwritten})
        self._report_drops()

    def _run(self) -> None:
        _lower_priority()
        # Sleep between flushes rather than wake per row: one insert per interval keeps the
        # writer off the request path.
        while not self._stopped.wait(self.flush_seconds):
            self._write_queued()
        self._write_queued()

    def _catch_up_run(self) -> None:
        while True:
            self._behind.wait()
            if self._stopped.is_set():
                return
            self._write_queued()
            self._behind.clear()

    def _write_queued(self) -> None:
        with self._flushing:
            self._drain()
            self._flush()
            self._report_drops()

    def _oldest(self) -> float | None:
        """When the oldest row not yet written was made (epoch), None when there is none."""
        since = self._waiting_since  # pending rows are older than any still in _rows
        if since is None and self._rows:
            since = self._rows_since
        return since

    def _report_drops(self) -> None:
        dropped = self._dropped
        if dropped > self._reported:
            log.error(
                "audit backlog full; rows dropped",
                extra={"dropped": dropped - self._reported, "backlog_limit": BACKLOG_LIMIT},
            )
            self._reported = dropped

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self.catch_up_seconds / 2)):
            since = self._oldest()
            lag = 0.0 if since is None else max(0.0, time.time() - since)
            QUEUED.set(self.unwritten())
            LAG.set(lag)
            if lag > self.catch_up_seconds:
                self._behind.set()
            with self._writing_lock:
                overdue = self._writing is not None and time.monotonic() > self._writing[1]
            if overdue:
                log.error("audit write hangs; cutting its connection to retry")
                self._cut()

    def _cut(self) -> None:
        with self._writing_lock:
            if self._writing is not None:
                interrupt(self._writing[0])

    def _drain(self) -> None:
        since, rows = self._rows_since, self._rows
        count = len(rows)  # what is appended meanwhile waits for the next round
        if not count:
            return
        if not self._pending:
            self._waiting_since = since
        take = rows.popleft
        self._pending.extend([take() for _ in range(count)])

    def _row(self, e: AuditEntry) -> tuple[object, ...] | str:
        if not self._sqlite:
            return _copy_line(e)
        return (_sqlite_time(e.at), *_texts(e), e.latency_ms)

    def _flush(self) -> None:
        while self._pending:
            if self._unanswered is not None:
                # The last write's commit went unanswered: its rows are written again only
                # if its id is not in the table.
                batch, count = self._unanswered
                landed = self._in_transaction(partial(self._landed, batch=batch))
                if landed is None:
                    return
                if landed:
                    self._written(batch, count)
                    continue
            else:
                batch, count = uuid.uuid4().hex, min(len(self._pending), _CHUNK)
            chunk = self._pending[:count]
            if self._in_transaction(partial(self._write, rows=chunk, batch=batch)) is None:
                self._unanswered = (batch, count)
                return
            self._written(batch, count)

    def _written(self, batch: str, count: int) -> None:
        self._unanswered = None
        self._last_write = batch
        del self._pending[:count]
        if not self._pending:
            self._waiting_since = None

    def _landed(self, cursor: Any, batch: str) -> bool:
        cursor.execute(self._sql(_LANDED), (batch,))
        return cursor.fetchone() is not None

    def _write(self, cursor: Any, rows: list[tuple[object, ...] | str], batch: str) -> bool:
        if self._sqlite:
            # A statement of many rows keeps a statement journal for its own rollback: in
            # memory, not in a temporary file (two system calls per page it touches).
            cursor.execute("PRAGMA temp_store = MEMORY")
            for start in range(0, len(rows), self.batch_size):
                _insert_many(cursor, rows[start : start + self.batch_size])  # type: ignore[arg-type]
        else:
            # COPY: one stream for the whole batch, its lines made on the request path.
            # Formatting them here (write_row per row) held the GIL for several
            # milliseconds per flush, which the request loop waited out: the service's
            # p99 on PostgreSQL was three times its p99 without audit flushes.
            with cursor.copy(_COPY) as copy:
                copy.write("".join(rows).encode(errors="replace"))  # type: ignore[arg-type]
        # This write's id, in its own transaction; the last one's is no longer needed.
        now = datetime.now(UTC)
        stale = now - WRITE_IDS_KEPT
        cursor.execute(self._sql(_FORGET), (self._last_write, self._stamp(stale)))
        cursor.execute(self._sql(_MARK), (batch, self._stamp(now)))
        return True

    def _sql(self, statement: str) -> str:
        return statement if self._sqlite else statement.replace("?", "%s")

    def _stamp(self, at: datetime) -> object:
        return _sqlite_time(at) if self._sqlite else at

    def _in_transaction(self, work: Callable[[Any], T]) -> T | None:
        """``work`` on a cursor in one transaction, committed; None when the database failed
        (the connection is then dropped, never back into the pool)."""
        driver_error = self.engine.dialect.loaded_dbapi.Error
        try:
            conn = self.engine.raw_connection()
        except (SQLAlchemyError, driver_error) as exc:
            self._failed(exc)
            return None
        result: T | None = None
        try:
            with self._writing_lock:
                self._writing = (conn.driver_connection, time.monotonic() + WRITE_LIMIT_SECONDS)
            set_local_timeout(conn)  # through a transaction pooler; nothing otherwise
            cursor = conn.cursor()
            value = work(cursor)
            cursor.close()
            conn.commit()
            result = value
        except (SQLAlchemyError, driver_error) as exc:
            self._failed(exc)
        finally:
            with self._writing_lock:
                self._writing = None
            if result is not None:
                conn.close()
            else:
                conn.invalidate()  # possibly cut or broken: never back into the pool
        return result

    def _failed(self, exc: BaseException) -> None:
        log.warning(
            "audit write failed; will retry",
            extra={"rows": len(self._pending), "error": type(exc).__name__},
        )


# COPY's text format: these four characters escaped, so that a value cannot end its field
# or its row (XML text may hold tabs and line breaks; a requester name may hold anything),
# and NUL, which no PostgreSQL text can hold, dropped: one such row would fail every retry
# of its batch.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": None})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _texts(e: AuditEntry) -> tuple[str | None, ...]:
    """The row's text values between its time and its latency, in :data:`_COLUMNS` order,
    clipped to their columns' sizes."""
    return (
        _clip(e.requester, 300),
        e.version,
        _clip(e.naic, 50),
        _clip(e.policy_key, 50),
        _clip(e.vin, 50),
        _clip(e.verification_date, 40),
        _clip(e.request_reason, 40),
        e.response_code,
        e.reason_codes,
    )


def _copy_fields(texts: tuple[str | None, ...]) -> str:
    """``texts`` as COPY text fields, tab-separated. A row holds none of the characters to
    escape nearly always: looking for them in the whole row once costs a tenth of escaping
    each field (0.3 against 3.8 µs a row, on the request path)."""
    if None not in texts:
        whole = "".join(texts)  # type: ignore[arg-type]
        if not (
            "\\" in whole or "\t" in whole or "\n" in whole or "\r" in whole or "\x00" in whole
        ):
            return "\t".join(texts)  # type: ignore[arg-type]
    return "\t".join(map(_copy_text, texts))


def _copy_line(e: AuditEntry) -> str:
    """One row of :data:`_COPY` in COPY's text format (tab-separated, ``\\N`` for NULL). The
    latency to the microsecond: the shortest exact text of a float took twice as long to
    write, for digits that measure nothing."""
    return f"{_copy_time(e.at)}\t{_copy_fields(_texts(e))}\t{e.latency_ms:.3f}\n"


def _lower_priority() -> None:
    """The calling thread's nice value to :data:`IDLE_NICE` (per thread on Linux)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IDLE_NICE)
    except (AttributeError, OSError):  # no such call here: the writer runs at normal priority
        log.debug("audit writer priority unchanged")


def _insert_many(cursor: Any, rows: list[tuple[object, ...]]) -> None:
    """SQLite: many rows per statement. ``executemany`` steps once per row and hands the GIL
    over at every step, which costs the request loop a thread switch per audit row."""
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        sql = _INSERT if len(chunk) == 1 else f"{_INSERT}{f', {_ROW}' * (len(chunk) - 1)}"
        cursor.execute(sql, [value for row in chunk for value in row])


def _iso(value: datetime) -> str:
    return as_utc(value).astimezone(UTC).isoformat(timespec="milliseconds")


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
