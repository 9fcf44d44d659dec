"""The policy store as the decision table sees it.

Every request runs one or two indexed queries. They go straight to the DB-API driver on a
connection kept per thread (the threads of :mod:`service.db_deadline`): building SQLAlchemy
statements per request cost more than the queries themselves. The served-NAIC list and the
database health are cached for a moment per process: both are asked on every request and
change rarely. :meth:`SqlPolicyStore.interrupt` lets another thread cut a call that hangs.

With a read replica (``OLV_DATABASE_READ_URL``, :mod:`olv.read_replica`) a thread's connection
is the standby's while the standby is fit, the primary's otherwise; a read that fails on the
standby (or is cut there after a second) is asked again of the primary in the same call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from typing import Any, NoReturn, TypeVar

from psycopg import ClientCursor
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from olv.db import interrupt, is_sqlite, statement_timeout_ms
from olv.logging import describe_exception
from olv.read_replica import ReadReplica
from service import pg_prepared
from service.coverage import BatchFound, BatchReads, Period, PolicyView, StoreUnavailable

T = TypeVar("T")

_POLICY_SQL = (
    "SELECT p.id, p.policy_type, p.pending_review, c.vin, c.effective_date,"
    " c.expiration_date, c.cancel_date"
    " FROM policy p LEFT JOIN coverage c ON c.policy_id = p.id"
    " WHERE p.naic = ? AND p.policy_key = ?"
)
_VIN_SQL = (
    "SELECT policy_id, vin, effective_date, expiration_date, cancel_date"
    " FROM coverage WHERE naic = ? AND vin = ?"
)
# The reads of a whole batch of requests in one statement (PostgreSQL only: on SQLite a read
# is a call within the process, with no round trip to save). Each request's (NAIC, key, VIN)
# finds its policy and that policy's periods; or, where the key is empty or finds none, the
# VIN's periods: the table reads the VIN then, and reading it here saves a second round trip.
# A row carries its key's place in the arrays. The policy is looked up once per request: the
# VIN's side asks whether it was found rather than looking again.
_BATCH_SQL = (
    "SELECT k.i, p.id, p.policy_type, p.pending_review, c.policy_id, c.vin, c.effective_date,"
    " c.expiration_date, c.cancel_date"
    " FROM unnest(?::text[], ?::text[], ?::text[]) WITH ORDINALITY AS k(naic, policy_key, vin, i)"
    " LEFT JOIN policy p"
    " ON k.policy_key <> '' AND p.naic = k.naic AND p.policy_key = k.policy_key"
    " LEFT JOIN LATERAL ("
    "SELECT c.policy_id, c.vin, c.effective_date, c.expiration_date, c.cancel_date"
    " FROM coverage c WHERE c.policy_id = p.id"
    " UNION ALL"
    " SELECT c.policy_id, c.vin, c.effective_date, c.expiration_date, c.cancel_date"
    " FROM coverage c WHERE p.id IS NULL AND k.vin <> '' AND c.naic = k.naic AND c.vin = k.vin"
    ") c ON true"
)
# In index order, so that its plan is a walk of the (naic, policy_key) index for any NAIC: a
# plan made without the value (service.pg_prepared) otherwise scans the table for the first
# match, all of it for a NAIC that is not there (which any requester can send).
_SERVES_SQL = "SELECT 1 FROM policy WHERE naic = ? ORDER BY naic, policy_key LIMIT 1"
_PING_SQL = "SELECT 1"
# The same reads as PostgreSQL prepared statements.
_PREPARED = {
    sql: pg_prepared.statement(name, sql)
    for name, sql in (
        ("policy", _POLICY_SQL),
        ("vin", _VIN_SQL),
        ("batch", _BATCH_SQL),
        ("serves", _SERVES_SQL),
        ("ping", _PING_SQL),
    )
}
# A database that answers but refuses our statements (a damaged schema, a corrupt row) needs
# an operator; a lost connection is retried by the next request. While failures last they are
# logged at most this often, so a broken table cannot flood the log at thousands of requests
# a second.
_REFUSAL_LOG_SECONDS = 10.0
_FIRST_LOG_SECONDS = 1.0  # the first failure after answers: logged unless one was just logged

log = logging.getLogger(__name__)


class _Cut(StoreUnavailable):
    """The call was cut on purpose (:meth:`SqlPolicyStore.interrupt`), or failed on the
    standby: either way nothing was learned about the primary's health."""


class _ReplicaFailed(Exception):
    """A read on the standby failed: ask the primary."""


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(
        str(value)[:10]
    )  # SQLite keeps dates as ISO text; PostgreSQL's are dates


class SqlPolicyStore:
    def __init__(
        self, engine: Engine, cache_seconds: float = 5.0, replica: ReadReplica | None = None
    ) -> None:
        self.engine = engine
        self.replica = replica
        self.cache_seconds = cache_seconds
        self._marker = "?" if is_sqlite(str(engine.url)) else "%s"
        self._postgres = self._marker != "?"
        self._prepared: dict[int, set[bytes]] = {}  # per thread: what its connection holds
        # Per thread, its driver connection while nothing needs deciding per query (no
        # standby to choose, no timeout to send with the statement): the path of most reads.
        self._direct: dict[int, Any] = {}
        # Each thread's connection, by thread id, so that another thread can cut a call
        # (interrupt) or open a connection for a thread that must not wait for one (the
        # event loop's: see service.db_deadline). Entries leave under the lock before their
        # connection closes: a cut never hits a reused descriptor.
        self._conns: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._no_connect: set[int] = set()  # threads that never open a connection themselves
        self._cut: set[int] = set()  # threads whose call was cut: its error is no outage
        self._on_replica: set[int] = set()  # threads whose connection is the standby's
        self._reserved_wait = 30.0
        self.answered_at = float("-inf")  # when the database last answered a query
        self._refusal_logged_at = float("-inf")
        self._lost_since: float | None = None  # when a logged failure began (None: answering)
        self._served: dict[str, tuple[bool, float]] = {}
        self._healthy = True
        self._health_at = float("-inf")

    # --- PolicyStore -----------------------------------------------------------------------

    def healthy(self) -> bool:
        now = time.monotonic()
        if now - self._health_at < 1.0:
            return self._healthy
        try:
            self._query(_PING_SQL, ())
            ok = True
        except _Cut:
            return False  # the call was cut on purpose: nothing learned about the database
        except StoreUnavailable:
            ok = False
        self._healthy, self._health_at = ok, now
        return ok

    def serves(self, naic: str) -> bool:
        """Whether any policy of ``naic`` is in the store (one index probe, cached a moment).

        Probing one NAIC replaces a DISTINCT over the whole policy table, which took tens of
        milliseconds on a large store and stalled the request that happened to refresh it.
        """
        now = time.monotonic()
        hit = self._served.get(naic)
        if hit is not None and now - hit[1] < self.cache_seconds:
            return hit[0]
        answer = bool(self._query(_SERVES_SQL, (naic,)))
        if len(self._served) > 10_000:  # requesters can send any NAIC: keep the cache bounded
            self._served.clear()
        self._served[naic] = (answer, now)
        return answer

    def find_policy(self, naic: str, policy_key: str) -> PolicyView | None:
        rows = self._query(_POLICY_SQL, (naic, policy_key))
        return _policy(rows) if rows else None

    def vin_periods(self, naic: str, vin: str) -> Sequence[Period]:
        return [_period(r) for r in self._query(_VIN_SQL, (naic, vin))]

    # --- BatchStore: a batch's reads, one round trip -------------------------------------------

    @property
    def shares_reads(self) -> bool:
        """Whether a batch's reads cost less together (:meth:`read_batch`) than one by one:
        on PostgreSQL, one statement and round trip for them all; on SQLite, where a read is
        a call within the process, nothing is saved (:meth:`in_one_snapshot` instead)."""
        return self._postgres

    def read_batch(self, reads: BatchReads) -> BatchFound:
        if not self._postgres:
            return self.in_one_snapshot(partial(reads.one_by_one, self))
        asked, params = _batch_params(reads)
        return _batch_found(reads, asked, self._query(_BATCH_SQL, params))

    def awaits(self) -> bool:
        """Whether this thread's batch reads can be awaited (:meth:`read_batch_awaited`): on
        PostgreSQL, on a connection of its own to the primary with no per-statement timeout
        to send (behind a pooler, or on the standby, reads keep their blocking way)."""
        return self._postgres and threading.get_ident() in self._direct

    async def read_batch_awaited(self, reads: BatchReads, due: float) -> BatchFound:
        """:meth:`read_batch` without blocking the event loop, for at most until ``due``
        (:func:`time.monotonic`), then :class:`TimeoutError`. A read cut short leaves its
        connection behind (its answer may still come): the gate opens another."""
        tid = threading.get_ident()
        driver = self._direct.get(tid)
        if driver is None:
            raise StoreUnavailable("no connection to await a read on")
        prepared = self._prepared_of(tid)
        asked, params = _batch_params(reads)
        try:
            async with asyncio.timeout(due - time.monotonic()):
                rows = await pg_prepared.run_awaited(
                    driver, prepared, _PREPARED[_BATCH_SQL], params
                )
        except self._driver_errors() as exc:
            self._failed(tid, exc)
        except BaseException:  # past the deadline, or the task cancelled (the worker stops)
            self._drop(tid)
            raise
        self._answered()
        return _batch_found(reads, asked, rows)

    def in_one_snapshot(self, reads: Callable[[], T]) -> T:
        """SQLite: ``reads`` (this store's reads, made on this thread) inside one read
        transaction. Each read on its own took and released the file's shared lock (two
        ``fcntl`` calls) and looked the WAL over again: about 3 µs a read that a batch now
        pays once. Every read of the batch also sees the same moment of the store."""
        tid = threading.get_ident()
        driver = self._direct.get(tid)
        if self._postgres or driver is None or driver.in_transaction:
            return reads()
        try:
            driver.execute("BEGIN")
        except self._driver_errors() as exc:
            self._drop(tid)
            self._raise_if_cut(tid, exc)  # as a read would: no reads now
            return reads()  # on another connection, or reporting the outage
        try:
            return reads()
        finally:
            # A read that failed dropped the connection, and its transaction with it.
            if self._direct.get(tid) is driver:
                try:
                    driver.commit()
                except self._driver_errors():
                    self._drop(tid)  # never kept holding an old snapshot

    # --- plumbing --------------------------------------------------------------------------

    def _connection(self) -> Any:
        tid = threading.get_ident()
        conn = self._conns.get(tid)
        replica = self._use_replica()
        if conn is not None and (tid in self._on_replica) != replica:
            self._drop(tid)  # the standby became fit or unfit: change sides
            if tid in self._no_connect:  # the gate asks again where connections are opened
                raise _Cut("changing between the standby and the primary")
            conn = None
        if conn is None:
            if tid in self._no_connect:
                raise StoreUnavailable("no connection opened for this thread yet")
            conn, replica = self._open_either(replica)
            self._keep(tid, conn, replica)
        return conn

    def _use_replica(self) -> bool:
        return self.replica is not None and self.replica.usable()

    def _keep(self, tid: int, conn: Any, replica: bool) -> None:
        self._conns[tid] = conn
        self._prepared[tid] = set()
        if replica:
            self._on_replica.add(tid)
        elif self.replica is None and statement_timeout_ms(conn) is None:
            self._direct[tid] = conn.dbapi_connection

    def _open_either(self, replica: bool) -> tuple[Any, bool]:
        """A connection to the standby when asked and it connects, else to the primary."""
        if replica and self.replica is not None:
            try:
                return self._open(replica=True), True
            except (SQLAlchemyError, *self._driver_errors()) as exc:
                self.replica.failed(exc)
        return self._open(), False

    def _open(self, replica: bool = False) -> Any:
        engine = self.replica.engine if replica and self.replica is not None else self.engine
        conn = engine.raw_connection()
        if self._marker != "?":
            # One round trip per query instead of three (BEGIN … ROLLBACK): these are
            # single-statement reads. SQLite's driver opens no transaction for a SELECT.
            conn.driver_connection.autocommit = True
        return conn

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._run(sql, params)
        except _ReplicaFailed:
            return self._run(sql, params)  # the standby is now left out: the primary

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        tid = threading.get_ident()
        try:
            driver = self._direct.get(tid)
            if driver is None:
                conn = self._connection()
                timeout_ms = statement_timeout_ms(conn)
                if timeout_ms is None and tid not in self._on_replica:
                    driver = conn.dbapi_connection
            rows: list[tuple[Any, ...]]
            if driver is not None:
                if self._postgres:
                    prepared = self._prepared_of(tid)
                    rows = pg_prepared.run(driver, prepared, _PREPARED[sql], params)
                else:
                    # Straight on the driver's connection (its execute opens a cursor that
                    # goes with its last reference, right after the fetch).
                    rows = driver.execute(sql, params).fetchall()
            else:
                statement = sql.replace("?", self._marker)
                rows = self._through_cursor(conn, statement, params, timeout_ms, tid)
            self._answered()
            return rows
        except (SQLAlchemyError, *self._driver_errors()) as exc:
            self._failed(tid, exc)

    def _prepared_of(self, tid: int) -> set[bytes]:
        """The statements ``tid``'s connection holds. Made with the connection (_keep); a set
        built here only if another thread dropped it meanwhile, not a new empty set per read."""
        prepared = self._prepared.get(tid)
        if prepared is None:
            prepared = self._prepared[tid] = set()
        return prepared

    def _answered(self) -> None:
        self.answered_at = time.monotonic()
        if self._lost_since is not None:
            self._recovered()

    def _failed(self, tid: int, exc: BaseException) -> NoReturn:
        """A read on ``tid``'s connection failed: that connection dropped, and the failure
        raised as the decision table takes it."""
        on_replica = tid in self._on_replica
        self._drop(tid)
        self._raise_if_cut(tid, exc)
        if on_replica and self.replica is not None:
            self.replica.failed(exc)
            if tid not in self._no_connect:
                raise _ReplicaFailed from None
            # Nothing learned about the primary: the gate asks again on a pool thread.
            raise _Cut("read replica failed") from None
        self._healthy, self._health_at = False, time.monotonic()
        self._report_refusal(exc)
        raise StoreUnavailable(type(exc).__name__) from None

    def _through_cursor(
        self, conn: Any, statement: str, params: tuple[Any, ...], timeout_ms: int | None, tid: int
    ) -> list[tuple[Any, ...]]:
        """A read with its timeout in the same message (behind a pooler), or on the standby."""
        if timeout_ms is None:
            cursor = conn.cursor()
        else:
            # Through a transaction pooler no session setting holds: the timeout goes in
            # the same message, bound client-side (a simple-protocol query may hold two
            # statements, run as one implicit transaction), still one round trip.
            cursor = ClientCursor(conn.driver_connection)
            statement = f"SET LOCAL statement_timeout = {timeout_ms}; {statement}"
        try:
            if tid in self._on_replica and tid not in self._no_connect:
                # The event loop's own calls are bounded by the gate's watchdog already.
                with self.replica.bounded(conn.driver_connection):  # type: ignore[union-attr]
                    return _fetch(cursor, statement, params, timeout_ms)
            return _fetch(cursor, statement, params, timeout_ms)
        finally:
            cursor.close()

    def _report_refusal(self, exc: BaseException) -> None:
        dbapi = self.engine.dialect.loaded_dbapi
        cause = getattr(exc, "orig", None) or exc
        sqlstate = getattr(cause, "sqlstate", None)
        lost = isinstance(cause, dbapi.OperationalError | dbapi.InterfaceError) and (
            sqlstate is None or sqlstate[:2] == "08" or sqlstate.startswith("57P")
        )
        now = time.monotonic()
        # The first failure after answers is logged (at most once a second), then one line
        # per interval while the failures last, so that a broken table cannot flood the log.
        starts = self._lost_since is None
        quiet = _FIRST_LOG_SECONDS if starts else _REFUSAL_LOG_SECONDS
        if now - self._refusal_logged_at < quiet:
            return
        self._refusal_logged_at = now
        self._lost_since = now if starts else self._lost_since
        # A lost connection (a pooler or server that closed it, a server down) is retried on
        # a new one by the next request; a statement past its timeout means a slow or locked
        # table; a refusal needs an operator.
        if lost:
            message = "policy store lost its database connection; answering SYSU until it is back"
        elif sqlstate == "57014":
            message = "policy store query ran past its statement timeout; answering SYSU"
        else:
            message = "policy store refused a query; answering SYSU"
        (log.warning if lost else log.error)(
            message, extra={**describe_exception(cause), "sqlstate": sqlstate}
        )

    def _recovered(self) -> None:
        with self._lock:
            since, self._lost_since = self._lost_since, None
        if since is not None:
            log.warning(
                "policy store answers again",
                extra={"after_seconds": round(time.monotonic() - since, 2)},
            )

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (self.engine.dialect.loaded_dbapi.Error,)

    def _raise_if_cut(self, tid: int, exc: BaseException) -> None:
        """Raise :class:`_Cut` when ``exc`` came of cutting ``tid``'s call on purpose
        (:meth:`interrupt`): no outage, and nothing more to read."""
        if tid in self._cut:
            self._cut.discard(tid)
            raise _Cut(type(exc).__name__) from None

    def _drop(self, tid: int) -> None:
        with self._lock:
            conn = self._conns.pop(tid, None)
            self._direct.pop(tid, None)
            self._on_replica.discard(tid)
            self._prepared.pop(tid, None)
        if conn is not None:
            invalidate: Callable[[], None] = conn.invalidate
            try:
                invalidate()
            except (SQLAlchemyError, *self._driver_errors()):
                pass

    # --- for service.db_deadline -------------------------------------------------------------

    def reserve(self, thread_id: int, wait_seconds: float) -> None:
        """``thread_id`` never opens a connection itself (:meth:`open_for` does it elsewhere),
        and on SQLite waits for a lock at most ``wait_seconds`` (SQLite cannot cut a lock
        wait)."""
        self._no_connect.add(thread_id)
        self._reserved_wait = wait_seconds

    def open_for(self, thread_id: int) -> None:
        """Open the connection of a reserved thread, from another thread."""
        conn, replica = self._open_either(self._use_replica())
        if self._marker == "?":
            conn.driver_connection.execute(f"PRAGMA busy_timeout={int(self._reserved_wait * 1000)}")
        with self._lock:
            if thread_id not in self._conns:
                self._keep(thread_id, conn, replica)
                return
        conn.close()

    def connection_of(self, thread_id: int) -> object | None:
        return self._conns.get(thread_id)

    def discard(self, thread_id: int | None = None) -> None:
        """Drop a thread's connection (after its call was cut, or when the thread ends)."""
        tid = threading.get_ident() if thread_id is None else thread_id
        self._cut.discard(tid)
        self._drop(tid)

    def interrupt(self, thread_id: int) -> None:
        """Make the call running on ``thread_id`` return with an error; never blocks."""
        with self._lock:
            conn = self._conns.get(thread_id)
            if conn is not None:
                self._cut.add(thread_id)
                interrupt(conn.driver_connection)

    def close(self) -> None:
        """Close this thread's connection and those of reserved threads; cut any others."""
        with self._lock:
            mine = [
                self._conns.pop(t)
                for t in {threading.get_ident(), *self._no_connect}
                if t in self._conns
            ]
            self._direct.clear()  # the others' are cut below: their next read fails anyway
            for other in self._conns.values():
                interrupt(other.driver_connection)
        for conn in mine:
            conn.close()


def _policy(rows: Sequence[tuple[Any, ...]]) -> PolicyView:
    """A policy from its rows: id, type, pending review, then a coverage period or NULLs."""
    first = rows[0]
    periods = [
        Period(first[0], r[3], _as_date(r[4]), _as_date(r[5]), _as_date(r[6]))  # type: ignore[arg-type]
        for r in rows
        if r[4] is not None
    ]
    return PolicyView(first[0], first[1], bool(first[2]), periods)


def _period(row: Sequence[Any]) -> Period:
    return Period(row[0], row[1], _as_date(row[2]), _as_date(row[3]), _as_date(row[4]))  # type: ignore[arg-type]


def _batch_params(reads: BatchReads) -> tuple[list[tuple[str, str, str]], tuple[Any, ...]]:
    """The batch's lookups (:func:`_aligned`), and the statement's three arrays of them."""
    asked = _aligned(reads)
    return asked, ([a[0] for a in asked], [a[1] for a in asked], [a[2] for a in asked])


def _batch_found(
    reads: BatchReads, asked: list[tuple[str, str, str]], rows: list[tuple[Any, ...]]
) -> BatchFound:
    """What the batch statement's rows say of ``reads`` (a row carries its lookup's place)."""
    wanted = set(reads.policies)
    policy_rows: dict[int, list[tuple[Any, ...]]] = {}
    vin_rows: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        if row[1] is not None:  # the policy, with one of its periods or none
            policy_rows.setdefault(row[0], []).append((*row[1:4], *row[5:]))
        elif row[4] is not None:  # no policy: a period of the VIN
            vin_rows.setdefault(row[0], []).append(row[4:])
    policies = {
        key: _policy(group)
        for i, group in policy_rows.items()
        if (key := asked[i - 1][:2]) in wanted
    }
    periods = {
        (asked[i - 1][0], asked[i - 1][2]): [_period(r) for r in group]
        for i, group in vin_rows.items()
    }
    return BatchFound(policies, periods)


def _aligned(reads: BatchReads) -> list[tuple[str, str, str]]:
    """The batch's reads as one (NAIC, key, VIN) per lookup: each policy asked, with the VIN
    to read should its key find nothing; then each VIN asked without a key, or with a key
    already paired with another VIN."""
    asked = [(naic, key, "") for naic, key in reads.policies]
    place = {key: n for n, key in enumerate(reads.policies)}
    for naic, vin, key in reads.vins:
        n = place.pop((naic, key), None) if key else None
        if n is None:
            asked.append((naic, key, vin))
        else:
            asked[n] = (naic, key, vin)
    return asked


def _fetch(cursor: Any, statement: str, params: tuple[Any, ...], timeout_ms: int | None) -> Any:
    """The rows of ``statement``; after a ``SET LOCAL`` sent with it, those of its second part."""
    cursor.execute(statement, params)
    if timeout_ms is not None:
        cursor.nextset()
    return cursor.fetchall()
