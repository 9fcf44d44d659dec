"""The policy store as the decision table sees it.

Every request runs one or two indexed queries. They go straight to the DB-API driver on a
connection kept per thread (the threads of :mod:`service.db_deadline`): building SQLAlchemy
statements per request cost more than the queries themselves. The served-NAIC list and the
database health are cached for a moment per process: both are asked on every request and
change rarely. :meth:`SqlPolicyStore.interrupt` lets another thread cut a call that hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from olv.db import interrupt, is_sqlite
from olv.logging import describe_exception
from service.coverage import Period, PolicyView, StoreUnavailable

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
_SERVES_SQL = "SELECT 1 FROM policy WHERE naic = ? LIMIT 1"
_PING_SQL = "SELECT 1"
# A database that answers but refuses our statements (a damaged schema, a corrupt row) needs
# an operator; an outage is already visible as SYSU answers. Refusals are logged at most this
# often so a broken table cannot flood the log at thousands of requests a second.
_REFUSAL_LOG_SECONDS = 10.0

log = logging.getLogger(__name__)


class _Cut(StoreUnavailable):
    """The call was cut on purpose (:meth:`SqlPolicyStore.interrupt`)."""


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])  # SQLite keeps dates as ISO text


class SqlPolicyStore:
    def __init__(self, engine: Engine, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._marker = "?" if is_sqlite(str(engine.url)) else "%s"
        # Each thread's connection, by thread id, so that another thread can cut a call
        # (interrupt) or open a connection for a thread that must not wait for one (the
        # event loop's: see service.db_deadline). Entries leave under the lock before their
        # connection closes: a cut never hits a reused descriptor.
        self._conns: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._no_connect: set[int] = set()  # threads that never open a connection themselves
        self._cut: set[int] = set()  # threads whose call was cut: its error is no outage
        self._reserved_wait = 30.0
        self.answered_at = float("-inf")  # when the database last answered a query
        self._refusal_logged_at = float("-inf")
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
        if not rows:
            return None
        first = rows[0]
        periods = [
            Period(first[0], r[3], _as_date(r[4]), _as_date(r[5]), _as_date(r[6]))  # type: ignore[arg-type]
            for r in rows
            if r[4] is not None
        ]
        return PolicyView(first[0], first[1], bool(first[2]), periods)

    def vin_periods(self, naic: str, vin: str) -> Sequence[Period]:
        return [
            Period(r[0], r[1], _as_date(r[2]), _as_date(r[3]), _as_date(r[4]))  # type: ignore[arg-type]
            for r in self._query(_VIN_SQL, (naic, vin))
        ]

    # --- plumbing --------------------------------------------------------------------------

    def _connection(self) -> Any:
        tid = threading.get_ident()
        conn = self._conns.get(tid)
        if conn is None:
            if tid in self._no_connect:
                raise StoreUnavailable("no connection opened for this thread yet")
            conn = self._open()
            self._conns[tid] = conn
        return conn

    def _open(self) -> Any:
        conn = self.engine.raw_connection()
        if self._marker != "?":
            # One round trip per query instead of three (BEGIN … ROLLBACK): these are
            # single-statement reads. SQLite's driver opens no transaction for a SELECT.
            conn.driver_connection.autocommit = True
        return conn

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        statement = sql if self._marker == "?" else sql.replace("?", self._marker)
        try:
            # Straight on the driver's connection (both drivers' execute opens a cursor
            # that goes with its last reference, right after the fetch).
            rows: list[tuple[Any, ...]] = (
                self._connection().dbapi_connection.execute(statement, params).fetchall()
            )
            self.answered_at = time.monotonic()
            return rows
        except (SQLAlchemyError, *self._driver_errors()) as exc:
            tid = threading.get_ident()
            self._drop(tid)
            if tid in self._cut:
                self._cut.discard(tid)
                raise _Cut(type(exc).__name__) from None
            self._healthy, self._health_at = False, time.monotonic()
            self._report_refusal(exc)
            raise StoreUnavailable(type(exc).__name__) from None

    def _report_refusal(self, exc: BaseException) -> None:
        dbapi = self.engine.dialect.loaded_dbapi
        cause = getattr(exc, "orig", None) or exc
        if isinstance(cause, dbapi.OperationalError | dbapi.InterfaceError):
            return  # unreachable or hung: the breaker and the SYSU answers speak for it
        now = time.monotonic()
        if now - self._refusal_logged_at < _REFUSAL_LOG_SECONDS:
            return
        self._refusal_logged_at = now
        sqlstate = getattr(cause, "sqlstate", None)
        log.error(
            "policy store refused a query; answering SYSU",
            extra={**describe_exception(cause), "sqlstate": sqlstate},
        )

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        return (self.engine.dialect.loaded_dbapi.Error,)

    def _drop(self, tid: int) -> None:
        with self._lock:
            conn = self._conns.pop(tid, None)
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
        conn = self._open()
        if self._marker == "?":
            conn.driver_connection.execute(f"PRAGMA busy_timeout={int(self._reserved_wait * 1000)}")
        with self._lock:
            if thread_id not in self._conns:
                self._conns[thread_id] = conn
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
            for other in self._conns.values():
                interrupt(other.driver_connection)
        for conn in mine:
            conn.close()
