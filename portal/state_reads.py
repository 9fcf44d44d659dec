"""The state database's reads on every query: plate → VIN, and the VIN's current book of
business — within the query's budget, whatever the database does.

- **PostgreSQL** (production): on psycopg's asyncio connections from a small pool
  (``psycopg_pool``), in autocommit: no thread hand-off per query (which cost twice the CPU
  of the read itself, and the GIL's hand-overs on a busy event loop), one round trip per read;
  the statements of every request straight through libpq (:mod:`portal.pg_statements`).
- **SQLite** (embedded): on a few threads, each read on a pooled DB-API connection; the
  statements that write (the rate limit's, with its VIN's records) on each thread's own
  connection, kept out of the pool.

Either way the read runs in a task of its own and the query waits for it only until its
deadline: a hung database gets a 503 in time, and the read is cancelled behind the answer
(psycopg then cancels the statement on the server, or drops the connection).

:meth:`StateReader.execute` runs the other statements asked on every request (the shared rate
limits, :mod:`portal.ratelimit`) the same way, always on the primary: one statement that
commits by itself.

With a read replica (``OLV_DATABASE_READ_URL``, PostgreSQL only) the read goes to the standby
while :mod:`olv.read_replica` finds it fit; one that fails there or takes longer than the
replica's call bound is asked again of the primary within what is left of the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar

from psycopg import pq
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import SQLAlchemyError

from bob_loader import lookup
from olv import db, libpq
from olv.read_replica import ReadReplica
from olv.sqlite_inline import BUSY, Busy, InlineWriter
from portal import pg_statements
from portal.errors import ApiError, invalid
from portal.models import Registration

__all__ = ["RecordsAlong", "Vehicle", "StateReader"]

# Threads (SQLite) or pooled connections (PostgreSQL) per portal process.
CONNECTIONS = 8
# Every state a plate is registered in (a handful at most); ordered for a stable message.
_PLATE_QUERY = (
    select(Registration.vin, Registration.state)
    .where(Registration.plate == bindparam("plate"))
    .order_by(Registration.state)
)
# (VIN, plate state or None, current book-of-business records)
Vehicle = tuple[str, str | None, list[dict[str, Any]]]
Rows = list[tuple[Any, ...]]
T = TypeVar("T")
TUPLES_OK = pq.ExecStatus.TUPLES_OK


@dataclass
class RecordsAlong:
    """A VIN whose current records a statement asked anyway (the rate limit's, on every
    request) may read in the same round trip: ``records`` is set when it did, and the query
    then reads them from here (:meth:`portal.routing.Router.verify`)."""

    vin: str
    by: float  # the read's own deadline (time.monotonic()): the query's, less its reserve
    records: list[dict[str, Any]] | None = None


def unavailable() -> ApiError:
    return ApiError(503, "the state database is unavailable; try again")


def too_slow() -> ApiError:
    return ApiError(503, "the state database did not answer in time; try again")


@cache
def pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s``."""
    return pg_statements.PARAMETER.sub(r"%(\1)s", sql)


def _pick(rows: list[dict[str, Any]], plate: str, plate_state: str | None) -> tuple[str, str]:
    if plate_state:
        rows = [row for row in rows if row["state"] == plate_state]
    if not rows:
        where = f" in {plate_state}" if plate_state else ""
        raise ApiError(404, f"plate {plate}{where} is not registered")
    if len(rows) > 1:
        states = ", ".join(row["state"] for row in rows)
        raise invalid("plate_state", f"the plate is registered in {states}; name the state")
    return rows[0]["vin"], rows[0]["state"]


class StateReader:
    def __init__(
        self, engine: Engine, budget_seconds: float, replica: ReadReplica | None = None
    ) -> None:
        self.engine = engine
        self.replica = replica
        self._current = lookup.CurrentByVin(engine.dialect)
        self._plates = db.CompiledRead(_PLATE_QUERY, engine.dialect)
        self._threads = ThreadPoolExecutor(CONNECTIONS, thread_name_prefix="olv-portal-db")
        # SQLite: the rate-limit takes are writes, which take turns anyway (one writer per
        # file); on one thread they also keep one connection whose page cache stays valid,
        # where eight threads in turn each found the pages changed by the others.
        self._takes = ThreadPoolExecutor(1, thread_name_prefix="olv-portal-db-takes")
        self._own = threading.local()  # SQLite: each thread's connection for the statements
        self._owned: dict[Any, bool] = {}  # each such connection: whether a statement is on it
        self._owned_lock = threading.Lock()
        self._closed = False
        self._behind: set[asyncio.Task[Any]] = set()  # reads cut off at a deadline
        self._write_lock = db.sqlite_write_lock(engine)
        # SQLite: the statements, tried first on the event loop (olv.sqlite_inline).
        self._inline = InlineWriter(engine) if engine.dialect.name == "sqlite" else None
        self._pool: Any = None
        self._replica_pool: Any = None
        # Statements straight through libpq where the session keeps prepared statements.
        self._direct = not db.transaction_pooled(engine.url)
        if engine.dialect.name == "postgresql":
            # libpq's own connection string: a URL naming several servers stays usable.
            self._pool = _async_pool(
                _with_session_settings(libpq.conninfo(engine.url), engine.url),
                budget_seconds,
                "olv-portal-reads",
                db.pooled_connect_args(engine.url),
            )
            if replica is not None:
                self._replica_pool = _async_pool(
                    replica.conninfo,
                    replica.call_seconds,
                    "olv-portal-replica-reads",
                    db.pooled_connect_args(replica.url),
                )
        self._errors: tuple[type[BaseException], ...] = (
            engine.dialect.loaded_dbapi.Error,
            SQLAlchemyError,
            OSError,
        )

    async def open(self) -> None:
        for pool in (self._pool, self._replica_pool):
            if pool is not None:
                await pool.open(wait=False)  # the portal serves while the database is down

    async def close(self) -> None:
        for task in self._behind:
            task.cancel()
        for pool in (self._pool, self._replica_pool):
            if pool is not None:
                await pool.close(timeout=1.0)
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._takes.shutdown(wait=False, cancel_futures=True)
        if self._inline is not None:
            self._inline.close()
        # A connection under a statement is closed by its own thread when the statement ends:
        # closing it from here would free what the statement is still reading (a crash).
        with self._owned_lock:
            self._closed = True
            idle = [conn for conn, busy in self._owned.items() if not busy]
            for conn in idle:
                del self._owned[conn]
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    async def in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Other (rarer) database work, on the same threads."""
        if self._closed:
            raise unavailable()  # the threads are gone: the portal is shutting down
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    async def vehicle(
        self, vin: str | None, plate: str | None, plate_state: str | None, seconds: float
    ) -> Vehicle:
        """The VIN (from the plate when no VIN is given) and its current records; raises
        :class:`ApiError` 404/422 for the plate, 503 when the database fails or is too slow."""
        if self._pool is None:
            return await self._within(
                self.in_thread(self._read_sync, vin, plate, plate_state), seconds
            )
        replica = self.replica
        if replica is not None and replica.usable():
            started = time.monotonic()
            read = self._read_async(self._replica_pool, vin, plate, plate_state)
            try:
                return await self._within(read, min(seconds, replica.call_seconds))
            except ApiError as exc:
                if exc.status != 503:
                    raise  # the standby's answer (an unknown plate): no reason to ask again
                replica.failed(exc.__cause__ or exc)
            seconds -= time.monotonic() - started
        return await self._within(self._read_async(self._pool, vin, plate, plate_state), seconds)

    async def execute(self, sql: str, params: Mapping[str, Any], seconds: float) -> Rows:
        """One statement (``:name`` parameters), committed, and the rows it returns; raises
        :class:`ApiError` 503 when the database fails or does not answer within ``seconds``."""
        if self._pool is not None:
            run: Coroutine[Any, Any, Rows] = self._execute_async(sql, params)
        else:
            try:
                done = self._on_loop(sql, [params], [None])
            except self._errors as exc:
                raise unavailable() from exc
            if not isinstance(done, Busy):
                ((rows, _),) = done
                return rows
            run = self.in_thread(self._execute_sync, sql, params, seconds)
        return await self._within(run, seconds)

    def reads_along(self) -> bool:
        """Whether a statement asked anyway may read a VIN's records on the primary, as
        :meth:`vehicle` would (:mod:`portal.gathered_takes`): not when a read replica takes
        the look-ups."""
        return self.replica is None

    def on_threads(self) -> bool:
        """SQLite: statements run on the driver's own connections (on the event loop or the
        reader's threads), not on asyncio connections."""
        return self._pool is None

    def records_beside(self, column: str) -> str:
        """The current-records read for the VIN in ``column`` of an enclosing statement."""
        return self._current.sql_beside(column)

    def records(self, rows: Rows) -> list[dict[str, Any]]:
        """Records from rows of :meth:`records_beside`'s columns."""
        return self._current.records(rows)

    async def rows_on_primary(self, sql: str, params: Mapping[str, Any]) -> Rows:
        """One statement (``:name`` parameters) on the primary's asyncio pool, committed, and
        its rows; no time limit of its own (the caller bounds it). PostgreSQL only."""
        return await self._execute_async(sql, params)

    async def shared(self, task: asyncio.Task[T], seconds: float) -> T:
        """:meth:`_within` for a task that other requests wait for too: one caller's deadline
        or departure leaves the task running for the others (it bounds itself)."""
        done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
        if not done:
            raise too_slow()
        try:
            return task.result()
        except Exception as exc:
            answer = self.failed(exc)
            if answer is exc:
                raise
            raise answer from exc

    def failed(self, exc: BaseException) -> BaseException:
        """What to raise for a statement that raised ``exc``: a 503 for the database's errors
        and for running out of time, else ``exc`` itself."""
        if isinstance(exc, TimeoutError):
            return too_slow()
        if isinstance(exc, self._errors):
            return unavailable()
        return exc

    async def _execute_async(self, sql: str, params: Mapping[str, Any]) -> Rows:
        if self._direct:
            async with self._pool.connection() as conn:
                return await pg_statements.rows(conn, sql, params)
        async with self._pool.connection() as conn, conn.cursor() as cursor:
            await cursor.execute(pyformat(sql), params)  # autocommit: committed here
            # Asked of the result's status: ``cursor.description`` builds a column object per
            # column on every call, about 5 % of a verification's instructions (bench/RESULTS.md).
            result = cursor.pgresult
            if result is None or result.status != TUPLES_OK:
                return []
            rows: Rows = await cursor.fetchall()
            return rows

    def _execute_sync(self, sql: str, params: Mapping[str, Any], seconds: float) -> Rows:
        """The statement's rows, committed."""
        ((rows, _),) = self._execute_many_sync(sql, [params], seconds, [None])
        return rows

    def _execute_many_sync(
        self,
        sql: str,
        params: Sequence[Mapping[str, Any]],
        seconds: float,
        vins: Sequence[str | None],
    ) -> list[tuple[Rows, list[dict[str, Any]]]]:
        """The statement run once per parameter set, in one transaction on this thread's own
        connection, and each run's rows with the records of its VIN (none for ``None``), read
        once the transaction has committed. A statement that writes waits its turn among this
        process's writers on :func:`olv.db.sqlite_write_lock`."""
        ends = time.monotonic() + seconds
        lock = self._write_lock if _writes(sql) else None
        conn = self._thread_connection()
        failed = False
        try:
            with db.write_turn(lock, seconds):
                # The engine waits up to 30 s for SQLite's write lock (imports share the
                # file); a statement of a request waits no longer than the request may.
                # Every use of this connection sets its own wait.
                left = max(1, int((ends - time.monotonic()) * 1000))
                conn.execute(f"PRAGMA busy_timeout = {left}")
                return self._statements(sql, params, vins, conn)
        except self._errors:
            failed = True  # a new connection next time, whatever went wrong
            raise
        finally:
            self._put_back(conn, drop=failed)

    def _statements(
        self,
        sql: str,
        params: Sequence[Mapping[str, Any]],
        vins: Sequence[str | None],
        conn: Any,
        commit_first: bool = True,
    ) -> list[tuple[Rows, list[dict[str, Any]]]]:
        """SQLite: the statement once per parameter set in one transaction on ``conn``, and
        each VIN's records: read once the transaction has committed (``commit_first``: the
        write lock is held for the statements alone), or before its commit."""
        cursor = conn.cursor()
        try:
            try:
                done: list[Rows] = []
                for each in params:
                    cursor.execute(sql, each)
                    done.append(cursor.fetchall() if cursor.description else [])
                if commit_first:
                    conn.commit()
                found = [[] if vin is None else self._current(cursor, vin) for vin in vins]
                if not commit_first:
                    conn.commit()
            except BaseException:
                conn.rollback()
                raise
            return list(zip(done, found, strict=True))
        finally:
            cursor.close()

    def _thread_connection(self) -> Any:
        """This thread's own SQLite connection, made by the engine (its pragmas) and kept out
        of the engine's pool: the statements of every request go through here, and a pool's
        checkout and return (its reset) cost more than the statements' own work. Marked busy
        until :meth:`_put_back`."""
        conn: Any = getattr(self._own, "conn", None)
        if conn is None:
            made = self.engine.raw_connection()
            conn = made.driver_connection
            made.detach()  # out of the pool's count: it closes when this reader does
            self._own.conn = conn
        with self._owned_lock:
            if self._closed:
                self._own.conn = None
                conn.close()
                raise self.engine.dialect.loaded_dbapi.ProgrammingError("the reader is closed")
            self._owned[conn] = True
        return conn

    def _put_back(self, conn: Any, drop: bool) -> None:
        """The statement on ``conn`` is over: the connection waits for the next, or closes
        when it failed or the reader closed meanwhile."""
        with self._owned_lock:
            drop = drop or self._closed
            if drop:
                self._owned.pop(conn, None)
            else:
                self._owned[conn] = False
        if drop:
            self._own.conn = None
            with contextlib.suppress(Exception):
                conn.close()

    async def takes(
        self, sql: str, params: Sequence[Mapping[str, Any]], vins: Sequence[str], seconds: float
    ) -> list[tuple[Rows, list[dict[str, Any]]]]:
        """SQLite: the statement once per parameter set and each VIN's records, in one
        transaction, within ``seconds`` from now. On the event loop when it can start at once
        (:mod:`olv.sqlite_inline`); else :meth:`_execute_many_sync` on the reader's thread for
        takes, one hop for them all: a hop still queued at the end is not run (its requests
        have had their 503), and one running waits for the write lock no longer."""
        if self._closed:
            raise unavailable()
        done = self._on_loop(sql, params, vins)
        if not isinstance(done, Busy):
            return done
        ends = time.monotonic() + seconds

        def run() -> list[tuple[Rows, list[dict[str, Any]]]]:
            left = ends - time.monotonic()
            if left <= 0:
                raise TimeoutError
            return self._execute_many_sync(sql, params, left, vins)

        return await asyncio.get_running_loop().run_in_executor(self._takes, run)

    def _on_loop(
        self, sql: str, params: Sequence[Mapping[str, Any]], vins: Sequence[str | None]
    ) -> list[tuple[Rows, list[dict[str, Any]]]] | Busy:
        """SQLite: :meth:`_statements` on the calling thread when no lock stands in the way;
        else :data:`~olv.sqlite_inline.BUSY`. The records are read before the commit here, so
        that a refusal at any step leaves nothing done (the takes are then made elsewhere)."""
        if self._inline is None or self._closed:
            return BUSY
        return self._inline.run(partial(self._statements, sql, params, vins, commit_first=False))

    async def _within(self, read: Coroutine[Any, Any, T], seconds: float) -> T:
        task = asyncio.ensure_future(read)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
        except asyncio.CancelledError:  # the client went away
            self._leave(task)
            raise
        if not done:
            self._leave(task)
            raise too_slow()
        try:
            return task.result()
        except self._errors as exc:
            raise unavailable() from exc

    def _leave(self, task: asyncio.Task[Any]) -> None:
        """Cancel a read nobody waits for any more, and keep it until it has ended."""
        task.cancel()
        self._behind.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._behind.discard(task)
        if not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()  # retrieved: nobody waits for it any more

    async def _read_async(
        self, pool: Any, vin: str | None, plate: str | None, plate_state: str | None
    ) -> Vehicle:
        async with pool.connection() as conn, conn.cursor() as cursor:
            state = plate_state
            if vin is None:
                rows = await self._plates.arows(cursor, plate=plate)
                vin, state = _pick(rows, plate or "", plate_state)
            return vin, state, await self._current.fetch(cursor, vin)

    def _read_sync(self, vin: str | None, plate: str | None, plate_state: str | None) -> Vehicle:
        with db.read_cursor(self.engine) as cursor:
            state = plate_state
            if vin is None:
                vin, state = _pick(self._plates.rows(cursor, plate=plate), plate or "", plate_state)
            return vin, state, self._current(cursor, vin)


def _writes(sql: str) -> bool:
    """Whether a statement may write (anything but a plain SELECT)."""
    return sql.lstrip()[:6].upper() != "SELECT"


# The reads and takes pool's own session settings (see _with_session_settings).
SESSION_SETTINGS = "-c synchronous_commit=off -c plan_cache_mode=force_generic_plan"


def _with_session_settings(conninfo: str, url: Any) -> str:
    """``conninfo`` with :data:`SESSION_SETTINGS`, where a connection may be given settings of
    its own (not through a transaction pooler, which refuses them and where psycopg prepares
    nothing).

    ``synchronous_commit = off``: this pool's only writes are the shared rate limits' takes
    (:mod:`portal.ratelimit`), one per verification, and their commit need not wait for the
    write-ahead log to reach the disk, which on a busy disk was the slowest part of a
    verification's wait for its take. A crash of the database server loses at most its last
    fraction of a second of counts (a bucket a little fuller than it was); the database is
    never left inconsistent.

    ``plan_cache_mode = force_generic_plan``: the statements are prepared (by
    :mod:`portal.pg_statements` at their first use, by psycopg's cursor at their fifth), and
    PostgreSQL still planned the gathered take (keys and VINs in arrays) afresh at every
    execution, 0.29 ms of the backend's time each; with its one plan a take's round trip took
    241-258 µs instead of 458-483 (a client loop on this machine kind). Every statement of
    this pool looks rows up by key (token, VIN, plate), an index walk whatever the values."""
    if db.transaction_pooled(url):
        return conninfo
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    options = str(conninfo_to_dict(conninfo).get("options") or "")
    return make_conninfo(conninfo, options=f"{options} {SESSION_SETTINGS}".strip())


def _async_pool(conninfo: str, wait_seconds: float, name: str, extra: dict[str, Any]) -> Any:
    """Connections in autocommit; a caller waits ``wait_seconds`` at most for one. ``extra``:
    psycopg arguments for the URL's pool mode (no prepared statements behind a pooler)."""
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(
        conninfo,
        min_size=2,
        max_size=CONNECTIONS,
        kwargs={"autocommit": True, "connect_timeout": libpq.CONNECT_TIMEOUT_SECONDS, **extra},
        timeout=wait_seconds,
        open=False,
        name=name,
    )
