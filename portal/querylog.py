"""Writing the query log and the insurer-call log in small batches, off the request path.

Each verification adds one ``query_log`` row and one ``insurer_calls`` row per call; a
background task writes what has gathered every ``FLUSH_SECONDS`` in one transaction (in a
worker thread, so a slow database never holds the event loop). Reading a query back first
flushes, so ``GET /api/v1/queries/{id}`` finds a query answered a moment ago. A graceful stop
writes everything; a hard crash loses at most the last ``FLUSH_SECONDS`` of rows.

When a write fails because the database cannot be reached, the rows wait for the next round;
at most ``MAX_WAITING_QUERIES`` wait, so an outage of hours cannot exhaust memory (later
queries are then counted and reported, not kept). When the database refuses the batch itself,
the rows are written one query at a time and any query the database refuses is set aside and
reported, so one bad row can never stop the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine, delete, exc

from olv import db
from olv.logging import describe_exception
from olv.sqlite_inline import CHECKPOINT_SECONDS, Busy, InlineWriter, checkpoint
from portal import metrics
from portal.models import InsurerCall, QueryLog, SecurityLog

FLUSH_SECONDS = 0.2
# At most this many rows are written on the event loop (SQLite): a round's at a few hundred
# queries a second, not a backlog after an outage, which would hold the loop for long.
INLINE_ROWS = 1_000
REPORT_SECONDS = 1.0  # how often the queue's depth and lag are reported (portal.metrics)
READ_FLUSH_SECONDS = 1.0  # how long a read waits for the log to be written
MAX_WAITING_QUERIES = 200_000  # about 200 MB; an hour of outage at 50 queries a second
PURGE_EVERY_SECONDS = 24 * 3600
# The first purge waits a while: every worker of a restart would otherwise delete at once, and a
# just-started portal should spend its first moments answering, not locking log tables.
PURGE_FIRST_SECONDS = 300
log = logging.getLogger(__name__)

# The shape of a logged query row, defined once: the query_log table's columns, in table order.
# The routing engine writes a row of exactly these keys; the history page, its CSV export and
# the API's QueryRecord read a row through :func:`row_values`.
COLUMNS: tuple[str, ...] = tuple(column.key for column in QueryLog.__table__.columns)


_COLUMN_SET = frozenset(COLUMNS)
_UNREACHABLE = (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, OSError)
_QUERY_LOG = QueryLog.metadata.tables[QueryLog.__tablename__]
_INSURER_CALLS = InsurerCall.metadata.tables[InsurerCall.__tablename__]


def row_values(row: QueryLog) -> dict[str, Any]:
    """The logged query as a plain mapping of :data:`COLUMNS`, in order."""
    return {column: getattr(row, column) for column in COLUMNS}


def new_row(**values: Any) -> dict[str, Any]:
    """A row to log: exactly the :data:`COLUMNS`, none missing and none extra (a mistake in a
    writer fails at once, not as a later database error)."""
    if values.keys() != _COLUMN_SET:
        missing, extra = _COLUMN_SET - values.keys(), values.keys() - _COLUMN_SET
        raise ValueError(f"query_log row: missing {sorted(missing)}, unknown {sorted(extra)}")
    return values


def new_query_id() -> str:
    """Time-ordered (sorts by creation) and unguessable: 12 hex digits of milliseconds since
    the epoch, then 20 random hex digits (80 bits)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def purge(engine: Engine, days: int) -> int:
    """Delete query-log, security-log and insurer-call rows older than ``days`` days."""
    cutoff = datetime.now(UTC) - timedelta(days=days)
    removed = 0
    with engine.begin() as conn:
        for table in (QueryLog, SecurityLog, InsurerCall):
            removed += conn.execute(delete(table).where(table.at < cutoff)).rowcount or 0
    if removed:
        log.info("old log rows removed", extra={"rows": removed, "days": days})
    return removed


class QueryLogWriter:
    def __init__(self, engine: Engine, retention_days: int | None = None) -> None:
        self.engine = engine
        self.retention_days = retention_days
        self._queries: list[dict[str, Any]] = []
        self._calls: list[dict[str, Any]] = []
        self._writing: list[dict[str, Any]] = []  # the queries of the write in progress
        self._lock = asyncio.Lock()
        self._write_lock = db.sqlite_write_lock(engine)
        self._inline: InlineWriter | None = None  # SQLite: made at the first write
        self._stopped = False
        self._checkpointed_at = 0.0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self.dropped = 0  # queries not kept while the log was full
        self.set_aside = 0  # queries the database refused
        dbapi = engine.dialect.loaded_dbapi
        self._driver_errors: tuple[type[BaseException], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
        )

    def add(self, query: dict[str, Any], calls: list[dict[str, Any]]) -> None:
        if len(self._queries) >= MAX_WAITING_QUERIES:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error("query log full; queries not logged", extra={"dropped": self.dropped})
            return
        self._queries.append(query)
        self._calls.extend(calls)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._reporter = loop.create_task(self._report())

    async def _report(self) -> None:
        """Depth and lag once a second, on a task of its own: a write that hangs is exactly
        when they matter."""
        while not self._stopping.is_set():
            waiting = self._writing + self._queries
            oldest = waiting[0]["at"] if waiting else None
            lag = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
            metrics.query_log_backlog(len(waiting), max(0.0, lag))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), REPORT_SECONDS)

    async def _run(self) -> None:
        next_purge = time.monotonic() + PURGE_FIRST_SECONDS
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_SECONDS)
            try:
                await self.flush()
                await self._checkpoint_when_due()
                if self.retention_days and time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY_SECONDS
                    await asyncio.to_thread(purge, self.engine, self.retention_days)
            except Exception as exc:  # noqa: BLE001 - keep the rows and retry; never stop
                # Type and place only: a driver's message would quote VINs from the rows.
                log.error("query log write failed; retrying", extra=describe_exception(exc))

    async def flush(self) -> None:
        async with self._lock:
            queries, calls = self._queries, self._calls
            if not queries and not calls:
                return
            self._queries, self._calls = [], []
            self._writing = queries
            try:
                await self._written(queries, calls)
            except Exception as error:
                if _unreachable(error, self._driver_errors):
                    self._put_back(queries, calls)
                    raise
                # The database refused the batch: find the rows it refuses, keep the rest.
                await self._write_one_query_at_a_time(queries, calls)
            finally:
                self._writing = []

    async def settle(self, seconds: float) -> None:
        """Flush before a read, but never longer than ``seconds`` and never failing the read:
        at worst the read misses the last moment's queries."""
        try:
            async with asyncio.timeout(seconds):
                await self.flush()
        except Exception as error:  # noqa: BLE001 - the background task keeps retrying
            log.warning("query log not flushed before a read", extra=describe_exception(error))

    def _put_back(self, queries: list[dict[str, Any]], calls: list[dict[str, Any]]) -> None:
        # In front, so that order is kept. (A cancelled wait is not a failure: the thread goes
        # on and writes them.)
        self._queries[:0] = queries
        self._calls[:0] = calls

    async def _write_one_query_at_a_time(
        self, queries: list[dict[str, Any]], calls: list[dict[str, Any]]
    ) -> None:
        by_query: dict[str | None, list[dict[str, Any]]] = {}
        for call in calls:
            by_query.setdefault(call.get("query_id"), []).append(call)
        groups = [([q], by_query.pop(q["id"], [])) for q in queries]
        groups += [([], orphans) for orphans in by_query.values()]
        for index, (query, its_calls) in enumerate(groups):
            try:
                await asyncio.to_thread(self._write, query, its_calls)
            except Exception as error:
                if _unreachable(error, self._driver_errors):
                    rest = groups[index:]
                    self._put_back(
                        [q for qs, _ in rest for q in qs], [c for _, cs in rest for c in cs]
                    )
                    raise
                self.set_aside += 1
                # Type and place only: a driver's message would quote VINs from the row.
                log.error(
                    "query log row refused by the database; set aside",
                    extra={**describe_exception(error), "set_aside": self.set_aside},
                )

    async def _written(self, queries: list[dict[str, Any]], calls: list[dict[str, Any]]) -> None:
        """The rows written: a round's few on the event loop when SQLite lets them in at once
        (:mod:`olv.sqlite_inline`: a thread's hand-offs held the write lock for milliseconds,
        and each verification's rate-limit take waited behind it), else on a thread."""
        inline = self._inline_writer()
        inserts = None
        if inline is not None and len(queries) + len(calls) <= INLINE_ROWS:
            inserts = self._inserts(queries, calls)
            if not isinstance(inline.run(partial(_insert_all, inserts)), Busy):
                return
        await asyncio.to_thread(self._write, queries, calls, inserts)

    def _inline_writer(self) -> InlineWriter | None:
        """SQLite: the writer on the event loop for :attr:`engine` (which a test may swap)."""
        if self._inline is not None and self._inline.engine is not self.engine:
            self._inline.close()
            self._inline = None
        if self._inline is None and self.engine.dialect.name == "sqlite" and not self._stopped:
            self._inline = InlineWriter(self.engine)
        return self._inline

    async def _checkpoint_when_due(self) -> None:
        """SQLite: the log's pages into the database file, on a thread, now and then: the
        inline writes never do it (a checkpoint waits for the disk)."""
        inline = self._inline
        if inline is None or inline.written_at <= self._checkpointed_at:
            return
        if time.monotonic() - self._checkpointed_at < CHECKPOINT_SECONDS:
            return
        self._checkpointed_at = time.monotonic()
        await asyncio.to_thread(checkpoint, self.engine)

    def _inserts(
        self, queries: list[dict[str, Any]], calls: list[dict[str, Any]]
    ) -> list[db.Insert]:
        dialect = self.engine.dialect
        return [
            db.prepared(dialect, _QUERY_LOG, queries),
            db.prepared(dialect, _INSURER_CALLS, calls),
        ]

    def _write(
        self,
        queries: list[dict[str, Any]],
        calls: list[dict[str, Any]],
        inserts: list[db.Insert] | None = None,
    ) -> None:
        """``inserts``: the rows already :func:`~olv.db.prepared` (a refused try on the loop)."""
        # COPY on PostgreSQL: an INSERT of the same rows through SQLAlchemy cost about a sixth
        # of the portal's CPU per verification (bench/RESULTS.md, "State portal").
        # SQLite: behind this process's other writers, not in SQLite's busy wait, and holding
        # their lock for the inserts alone (the rows converted and the connection taken
        # before): a verification's rate-limit take waits behind it.
        if inserts is None:
            inserts = self._inserts(queries, calls)
        with self.engine.connect() as conn, db.write_turn(self._write_lock), conn.begin():
            for insert in inserts:
                db.insert_rows(conn, insert.table, insert)

    async def stop(self) -> None:
        """Let a write in progress finish (never cut a thread off its connection), then write
        what is left."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._reporter is not None:
            await self._reporter
            self._reporter = None
        await self.flush()
        self._stopped = True  # a later flush (a read's) takes the thread's way
        if self._inline is not None:
            self._inline.close()
            self._inline = None


def _insert_all(inserts: list[db.Insert], conn: sqlite3.Connection) -> None:
    for insert in inserts:
        db.sqlite_insert(conn, insert)
    conn.commit()


def _unreachable(error: BaseException, driver_errors: tuple[type[BaseException], ...]) -> bool:
    """The database could not be reached or answered (connection, lock, pool timeout), as
    opposed to refusing what was sent: only then are the rows worth keeping for later. A COPY
    raises the driver's own errors (``driver_errors``), not SQLAlchemy's wrappers of them."""
    return isinstance(error, (*_UNREACHABLE, *driver_errors)) or bool(
        getattr(error, "connection_invalidated", False)
    )
