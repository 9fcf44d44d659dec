"""Database engine, sessions and migrations.

SQLite is the embedded default; PostgreSQL (``postgresql+psycopg://``) is the production engine.
The schema is created and changed only by Alembic (``olv db upgrade``): commands open the
database with :func:`open_database`, which refuses an unsupported URL, an unreachable server and
a schema other than the code's, each with one line saying what to do (``olv.errors``).
"""

from __future__ import annotations

import math
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Integer,
    MetaData,
    Select,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection, CursorResult, Dialect, Result, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from olv import libpq
from olv.errors import (
    DATABASE_SETTING,
    UPGRADE_HINT,
    DatabaseUnreachable,
    SchemaError,
    UnsupportedDatabaseURL,
)

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Stable constraint names make Alembic migrations portable between SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# For tables that grow without bound: 64-bit on PostgreSQL, and on SQLite exactly INTEGER,
# because only that type aliases the rowid (free, no extra index).
RowId = BigInteger().with_variant(Integer(), "sqlite")


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, wait_seconds: float | None = None, **kwargs: Any) -> Engine:
    """An engine tuned for OLV's workload: many short reads, batched writes.

    ``wait_seconds`` bounds, on the client side, how long one call may wait for the database:
    SQLite's lock wait (busy timeout; default 30 s, for imports that share the file) and
    PostgreSQL's connect time, plus a server-side statement timeout. A server that hangs
    mid-query is not covered by these: :func:`interrupt` makes such a call return. Through a
    transaction pooler (:data:`POOL_MODE`) the timeout is set per transaction instead.
    """
    if is_sqlite(url):
        wait = 30.0 if wait_seconds is None else wait_seconds
        sqlite_args = {"check_same_thread": False, "timeout": wait}
        engine = create_engine(url, connect_args=sqlite_args, **kwargs)
        event.listen(engine, "connect", partial(_sqlite_pragmas, int(wait * 1000)))
        return engine
    pooled = transaction_pooled(url)
    connect_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    connect_args.update(pooled_connect_args(url))
    timeout_ms = None if wait_seconds is None else int(wait_seconds * 1000)
    if wait_seconds is not None:
        # libpq counts whole seconds and waits at least 2: round up, never below the bound.
        connect_args.setdefault("connect_timeout", max(2, math.ceil(wait_seconds)))
        if not pooled:
            connect_args.setdefault("options", f"-c statement_timeout={timeout_ms}")
    kwargs["connect_args"] = connect_args
    kwargs.setdefault("poolclass", ClosingQueuePool)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_recycle", 1800)
    engine = create_engine(url, **kwargs)
    if POOL_MODE in make_url(url).query:  # OLV's own parameter: libpq would refuse it
        event.listen(engine, "do_connect", _drop_pool_mode)
    if pooled and timeout_ms is not None:
        event.listen(engine, "connect", partial(_stamp_timeout, timeout_ms))
        event.listen(engine, "begin", _timeout_per_transaction)
    return engine


class ClosingQueuePool(QueuePool):
    """SQLAlchemy's queue pool, but a connection given back after the pool was disposed is
    closed. ``Engine.dispose()`` closes the idle connections and starts a new pool; one that a
    thread still held then, or was still opening (a call that outlived a shutdown: a hung
    query cut by its deadline, a background read), went back to the old pool later, where
    nothing closed it, and its server session stayed open until the garbage collector
    happened on it. ``_do_return_conn`` is the hook SQLAlchemy leaves to pool subclasses."""

    # SQLAlchemy names a pool's logger after its class's module: keep it under SQLAlchemy's
    # logger (quiet unless asked), not under OLV's, whose info lines the commands print.
    __module__ = QueuePool.__module__

    _disposed = False

    def dispose(self) -> None:
        self._disposed = True
        super().dispose()

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        if self._disposed:
            record.close()
            return
        super()._do_return_conn(record)


# --- transaction pooling (PgBouncer's pool_mode = transaction) ------------------------------
# Each transaction may run on another server connection, so nothing may outlive one: no
# server-side prepared statements (psycopg prepares a query run five times), no startup
# options (PgBouncer refuses them), no session SET. OLV is told by its URL, since the pooler
# is a property of the address connected to: ``?pool_mode=transaction``.

POOL_MODE = libpq.POOL_MODE
POOL_MODES = ("session", "transaction")  # "statement" breaks every multi-statement transaction
STATEMENT_TIMEOUT_MS = "olv_statement_timeout_ms"  # connection info: the per-transaction timeout


def transaction_pooled(url: str | URL) -> bool:
    """True when ``url`` reaches PostgreSQL through a pooler in transaction mode."""
    return make_url(url).query.get(POOL_MODE) == "transaction"


def pooled_connect_args(url: str | URL) -> dict[str, Any]:
    """psycopg connection arguments for the pool mode of ``url`` (none when connected direct)."""
    return {"prepare_threshold": None} if transaction_pooled(url) else {}


def statement_timeout_ms(connection: Any) -> int | None:
    """The statement timeout a pooled connection's autocommit statements must set themselves
    (``SET LOCAL`` in the same simple-protocol message); None when the session has one."""
    value: int | None = connection.info.get(STATEMENT_TIMEOUT_MS)
    return value


def _drop_pool_mode(
    _dialect: object, _record: object, _cargs: object, cparams: dict[str, Any]
) -> None:
    cparams.pop(POOL_MODE, None)


def _stamp_timeout(timeout_ms: int, _dbapi_connection: object, record: Any) -> None:
    record.info[STATEMENT_TIMEOUT_MS] = timeout_ms


def _timeout_per_transaction(connection: Connection) -> None:
    set_local_timeout(connection.connection)


def set_local_timeout(connection: Any) -> None:
    """Give the transaction a pooled connection (one of the engine's pool, checked out) is in,
    or is about to open, its statement timeout; nothing when the session has one already.

    On the driver: psycopg opens the transaction with this statement (SQLAlchemy's own BEGIN is
    a no-op), and the setting ends with the transaction, on whichever server it ran.
    """
    timeout_ms = statement_timeout_ms(connection)
    driver = connection.driver_connection
    if timeout_ms is not None and not getattr(driver, "autocommit", True):
        driver.execute(f"SET LOCAL statement_timeout = {timeout_ms}")


SQLITE_MMAP_BYTES = 1 << 30  # address space, not memory: pages come from the OS's file cache


def _sqlite_pragmas(busy_ms: int, dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # The lock wait first: the journal-mode switch below already needs a lock.
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    # WAL lets SOAP workers read while an import or the audit writer commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Pages read through a memory map rather than a read() each: every commit elsewhere (the
    # audit writer's, twice a second per worker) empties each reader's own page cache.
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """A moment read back from the database, made time-zone aware: SQLite hands back naive
    datetimes, and OLV writes every moment in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def changed_rows(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE or DELETE run through ``Session.execute`` changed (the session types
    its result without the count the cursor result carries)."""
    return cast("CursorResult[*tuple[Any, ...]]", result).rowcount or 0


class CompiledRead:
    """A Core ``select`` compiled once for a dialect and run straight on a DB-API cursor.

    For the reads asked on every request: SQLAlchemy's execution layer cost several times the
    query itself. The statement is still written once, with the models; rows come back as
    dicts keyed like ``.mappings()``, with the column types' own conversions (SQLite keeps
    dates and times as text). Its parameters must be named ``bindparam``s of plain values
    (strings, numbers): no bind-side conversion is applied.
    """

    def __init__(self, statement: Select[*tuple[Any, ...]], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.dialect = dialect
        self.sql = compiled.string
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None
        columns = list(statement.selected_columns)
        self._keys = [str(column.key) for column in columns]
        self._convert = [
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        ]

    def rows(self, cursor: Any, **values: Any) -> list[dict[str, Any]]:
        cursor.execute(self.sql, self._params(values))
        return self.dicts(cursor.fetchall())

    async def arows(self, cursor: Any, **values: Any) -> list[dict[str, Any]]:
        """The same on an asyncio driver's cursor (psycopg's ``AsyncCursor``)."""
        await cursor.execute(self.sql, self._params(values))
        return self.dicts(await cursor.fetchall())

    def _params(self, values: dict[str, Any]) -> Any:
        return values if self._order is None else tuple(values[k] for k in self._order)

    def dicts(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """Rows of this statement's columns (in its order), as :meth:`rows` returns them."""
        keys, convert = self._keys, self._convert
        return [
            {
                key: value if fn is None or value is None else fn(value)
                for key, fn, value in zip(keys, convert, row, strict=True)
            }
            for row in rows
        ]


def among(
    session: Session, column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter whatever the
    count, so the statement's text stays the same from batch to batch (the driver parses it
    once, not once per call as it does with hundreds of IN parameters)."""
    listed = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, listed, type_=postgresql.ARRAY(column.type)))
    return column.in_(listed)


@dataclass(frozen=True)
class Insert:
    """Rows made ready for :func:`insert_rows`: converted for SQLite's driver (its times as
    text) while no lock is held, so that a writer holds the write lock for the inserts alone."""

    table: Table
    columns: tuple[str, ...]
    rows: Sequence[dict[str, Any]]
    values: list[tuple[Any, ...]] | None  # SQLite's converted rows; None on PostgreSQL


def prepared(dialect: Dialect, table: Table, rows: Sequence[dict[str, Any]]) -> Insert:
    """``rows`` (each naming the same columns) ready for :func:`insert_rows` on ``dialect``."""
    columns = tuple(rows[0]) if rows else ()
    if dialect.name == "postgresql" or not rows:
        return Insert(table, columns, rows, None)
    # The driver's executemany with each column's own conversion, without SQLAlchemy's
    # per-row parameter processing, which cost more than the inserts themselves.
    convert = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    values = [
        tuple(
            value if fn is None or value is None else fn(value)
            for fn, value in zip(convert, (row[c] for c in columns), strict=True)
        )
        for row in rows
    ]
    return Insert(table, columns, rows, values)


def insert_rows(
    connection: Connection, table: Table, rows: Sequence[dict[str, Any]] | Insert
) -> None:
    """Insert many rows in one round: ``COPY`` on PostgreSQL (no per-row statement, parameter
    or ORM work), the driver's ``executemany`` on SQLite. Every row names the same columns;
    ids come from the table's own sequence, and none are returned. ``rows`` may come
    :func:`prepared` already."""
    insert = rows if isinstance(rows, Insert) else prepared(connection.dialect, table, rows)
    if not insert.rows:
        return
    driver = connection.connection.driver_connection
    if insert.values is not None:
        sqlite_insert(driver, insert)  # type: ignore[arg-type]
        return
    names = ", ".join(insert.columns)
    cursor = driver.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
        for row in insert.rows:
            copy.write_row([row[c] for c in insert.columns])


def sqlite_insert(conn: sqlite3.Connection, insert: Insert) -> None:
    """:func:`insert_rows` on SQLite's own driver connection (rows :func:`prepared` for it),
    in the transaction ``conn`` is in."""
    if not insert.values:
        return
    names = ", ".join(insert.columns)
    marks = ", ".join("?" * len(insert.columns))
    cursor = conn.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO {insert.table.name} ({names}) VALUES ({marks})", insert.values
        )
    finally:
        cursor.close()


# One lock per SQLite file in this process (see sqlite_write_lock).
_SQLITE_WRITE_LOCKS: dict[str, threading.Lock] = {}
_SQLITE_WRITE_LOCKS_GUARD = threading.Lock()


def sqlite_write_lock(engine: Engine) -> threading.Lock | None:
    """The lock this process's threads take around a write transaction on ``engine``'s SQLite
    file (None on PostgreSQL).

    SQLite lets one writer in at a time and makes the others wait in its busy handler, which
    sleeps 1, 2, 5, 10 … 100 ms between looks at the lock: under a steady stream of small
    writes from a pool of threads the waits pile up into tails of hundreds of milliseconds.
    Threads queued on a lock of their own are woken the moment it is free; the busy handler is
    left with the other processes' writes."""
    if engine.dialect.name != "sqlite":
        return None
    key = str(engine.url.database or "")
    with _SQLITE_WRITE_LOCKS_GUARD:
        lock = _SQLITE_WRITE_LOCKS.get(key)
        if lock is None:
            lock = _SQLITE_WRITE_LOCKS[key] = threading.Lock()
    return lock


@contextmanager
def write_turn(lock: threading.Lock | None, seconds: float | None = None) -> Iterator[None]:
    """Hold ``lock`` (:func:`sqlite_write_lock`; None: nothing to hold) for a write
    transaction, waiting at most ``seconds`` (None: as long as it takes); past that, the error
    SQLite's own wait would give."""
    if lock is None:
        yield
        return
    if not lock.acquire(timeout=-1 if seconds is None else max(0.001, seconds)):
        raise sqlite3.OperationalError("database is locked")
    try:
        yield
    finally:
        lock.release()


@contextmanager
def read_cursor(engine: Engine) -> Iterator[Any]:
    """A DB-API cursor from the engine's pool for a few single-statement reads.

    No transaction is opened: on PostgreSQL the connection is in autocommit while lent out,
    which saves the BEGIN and ROLLBACK round trips; SQLite's driver opens none for a SELECT.
    A connection that failed is discarded rather than returned to the pool.
    """
    conn = engine.raw_connection()
    failed: tuple[type[BaseException], ...] = (engine.dialect.loaded_dbapi.Error, OSError)
    driver = conn.driver_connection
    postgres = not isinstance(driver, sqlite3.Connection)
    usable = False
    try:
        if postgres:
            driver.autocommit = True  # type: ignore[union-attr]
        cursor = conn.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
        usable = True
    except failed:
        raise
    except BaseException:
        usable = True  # the caller's own exception: the connection is fine
        raise
    finally:
        if usable and postgres:
            try:
                driver.autocommit = False  # type: ignore[union-attr]
            except failed:
                usable = False
        if usable:
            conn.close()  # back to the pool
        else:
            conn.invalidate()


def interrupt(driver_connection: Any) -> None:
    """Make a call blocked on this DB-API connection return with an error, from any thread.

    SQLite: ``interrupt()`` stops the running statement (a lock wait is bounded by the busy
    timeout instead: SQLite does not interrupt it). PostgreSQL: the socket is shut down, so a
    read waiting on a hung server or a dead link sees end-of-file at once; the connection is
    unusable afterwards and must be discarded. Never blocks.
    """
    if isinstance(driver_connection, sqlite3.Connection):
        with suppress(sqlite3.ProgrammingError):  # already closed: nothing left to stop
            driver_connection.interrupt()
        return
    import psycopg  # only PostgreSQL connections get here

    if not isinstance(driver_connection, psycopg.Connection):
        raise TypeError(f"no way to interrupt a {type(driver_connection).__name__}")
    try:
        fd = driver_connection.pgconn.socket
    except psycopg.OperationalError:  # the connection is already gone
        return
    # A duplicate of the descriptor: shutting it down acts on the shared socket, and closing
    # the duplicate leaves the driver's own descriptor to the driver.
    with suppress(OSError), socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def time_limit(connection: Connection, seconds: float) -> Iterator[Callable[[], None]]:
    """Statements run on ``connection`` inside the block stop with an ``OperationalError``
    once ``seconds`` have passed in all: a report over a large table gives up instead of
    holding a connection and a thread for as long as it takes. Call it inside a transaction.

    PostgreSQL: a statement timeout for the transaction (``SET LOCAL``); the block calls the
    function it is given between statements, which shortens that timeout to the time left
    (``TimeoutError`` once none is). SQLite: a progress handler interrupts whatever statement
    runs past the deadline; the function only raises ``TimeoutError`` past it.
    """
    deadline = time.monotonic() + seconds
    postgres = connection.dialect.name == "postgresql"

    def tighten() -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"over the {seconds:g} s time limit")
        if postgres:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(left * 1000))}")

    if postgres:
        tighten()
        yield tighten
        return
    raw = connection.connection.driver_connection
    assert raw is not None  # a checked-out connection always has its driver connection

    def past_deadline() -> int:
        return 1 if time.monotonic() > deadline else 0

    raw.set_progress_handler(past_deadline, 10_000)  # checked every 10,000 VM steps
    try:
        yield tighten
    finally:
        raw.set_progress_handler(None, 0)


@contextmanager
def all_waits_limited(
    connection: Connection, seconds: float | None
) -> Iterator[Callable[[], None]]:
    """:func:`time_limit`, and on SQLite the wait for the write lock limited to ``seconds`` as
    well (the engine waits 30 s for it, for imports that share the file), put back afterwards.
    Past the limit a statement raises ``OperationalError``: a timeout on PostgreSQL, "database
    is locked" or "interrupted" on SQLite. Yields :func:`time_limit`'s ``tighten``: call it
    between steps, so that each later statement may only take what is left (else each of
    them may take ``seconds``). None: no limit, and ``tighten`` does nothing. Call it inside a
    transaction."""
    if seconds is None:
        yield _no_limit
        return
    driver = connection.connection.driver_connection
    if not isinstance(driver, sqlite3.Connection):
        with time_limit(connection, seconds) as tighten:
            yield tighten
        return
    (before,) = driver.execute("PRAGMA busy_timeout").fetchone()
    driver.execute(f"PRAGMA busy_timeout = {max(1, int(seconds * 1000))}")
    try:
        with time_limit(connection, seconds) as tighten:
            yield tighten
    finally:
        try:
            driver.execute(f"PRAGMA busy_timeout = {int(before)}")
        except sqlite3.Error:
            connection.invalidate()  # its short wait must not go back to the pool


def _no_limit() -> None:
    """Nothing to tighten."""


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One session, one transaction: committed on success, rolled back on any error."""
    with session_factory(engine)() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # imported late: the SOAP workers never need it

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Create or migrate the schema to ``revision``."""
    from alembic import command
    from alembic.util import CommandError

    check_url(url)
    try:
        command.upgrade(alembic_config(url), revision)
    except CommandError as exc:  # e.g. a revision this code does not know
        raise SchemaError(f"cannot migrate {describe(url)}: {exc}") from exc
    except OperationalError as exc:
        if is_connection_failure(exc):
            raise unreachable(url, exc) from exc
        raise


# --- checks made before a command uses the database -----------------------------------------

SUPPORTED_URLS = ("sqlite:///PATH", "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE")


def check_url(url: str) -> None:
    """Refuse a URL OLV does not support, before SQLAlchemy looks for a driver for it."""
    supported = url.startswith(("sqlite:///", "postgresql+psycopg://"))
    if supported:
        try:
            make_url(url)
        except ArgumentError:
            supported = False
    if not supported:
        # Only the scheme is shown: the rest may carry a password.
        shown = f"{url.partition('://')[0]}://…" if "://" in url else url
        raise UnsupportedDatabaseURL(
            f"{DATABASE_SETTING}={shown!r} is not supported; use {' or '.join(SUPPORTED_URLS)}"
        )
    mode = make_url(url).query.get(POOL_MODE)
    if mode is not None and (is_sqlite(url) or mode not in POOL_MODES):
        raise UnsupportedDatabaseURL(
            f"{DATABASE_SETTING}: {POOL_MODE}={mode!r} is not supported; "
            f"PostgreSQL URLs take {POOL_MODE}={' or '.join(POOL_MODES)} (the pooler's mode)"
        )


def open_database(url: str, wait_seconds: float | None = None) -> Engine:
    """An engine for a command: supported URL, reachable database, schema at the code's head.

    ``wait_seconds``: as for :func:`make_engine` (a service checking its database at start
    must not wait minutes for a server that does not answer).
    """
    check_url(url)
    engine = make_engine(url, wait_seconds=wait_seconds)
    try:
        check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def check_schema(engine: Engine) -> None:
    """One cheap query: the database's Alembic revision must be the code's head.

    The embedded SQLite file is not created here (connecting would create an empty one):
    a missing file means the schema was never created.
    """
    url = engine.url
    path = sqlite_path(url)
    if path is not None and not path.exists():
        if not path.parent.is_dir():
            raise _missing_directory(path)
        raise SchemaError(f"no OLV database at {path}; {UPGRADE_HINT} (it creates the file)")
    try:
        with engine.connect() as conn:
            current = (
                set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
                if inspect(conn).has_table("alembic_version")
                else set()
            )
    except OperationalError as exc:
        if is_connection_failure(exc):
            raise unreachable(url, exc) from exc
        raise
    heads, known = _code_revisions()
    if current == heads:
        return
    where = describe(url)
    if not current:
        raise SchemaError(f"{where} has no OLV schema; {UPGRADE_HINT}")
    if current - known:
        raise SchemaError(
            f"{where} is at schema revision {', '.join(sorted(current - known))}, which this "
            "version of OLV does not know; run the OLV version that migrated it"
        )
    raise SchemaError(
        f"{where} is at schema revision {', '.join(sorted(current))}, this OLV needs "
        f"{', '.join(sorted(heads))}; run 'olv db upgrade'"
    )


@lru_cache(maxsize=1)
def _code_revisions() -> tuple[set[str], set[str]]:
    """(heads, every revision) of the migrations shipped with the code."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    return set(scripts.get_heads()), {rev.revision for rev in scripts.walk_revisions()}


def sqlite_path(url: URL) -> Path | None:
    """The absolute file of a SQLite URL (None for PostgreSQL and in-memory SQLite)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve()


def describe(url: str | URL) -> str:
    """Where the database is, for messages (never the password)."""
    parsed = make_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        return f"the SQLite database {path}"
    if parsed.get_backend_name() == "sqlite":
        return "the in-memory SQLite database"
    return f"the PostgreSQL database {parsed.database or '(default)'} at {libpq.servers(parsed)}"


def is_connection_failure(exc: DBAPIError) -> bool:
    """True when ``exc`` says the database could not be reached or opened (not a bad query)."""
    if exc.connection_invalidated:
        return True
    if isinstance(exc.orig, sqlite3.Error):
        return "unable to open database file" in str(exc.orig)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is None:  # psycopg: no server answered (refused, unresolvable, closed)
        return True
    # Connection exception, login refused, no such database, server shutting down.
    return sqlstate[:2] in ("08", "28", "3D") or sqlstate.startswith("57P")


def unreachable(url: str | URL, exc: DBAPIError) -> DatabaseUnreachable | UnsupportedDatabaseURL:
    """The one-line explanation of a failed connection: where, why, which setting to fix.

    A pooler that refuses OLV's startup option is no outage but a URL without its pool mode:
    refused like any unusable setting, so that a server does not start and answer SYSU."""
    parsed = make_url(url)
    path = sqlite_path(parsed)
    if path is not None and not path.parent.is_dir():
        return _missing_directory(path)
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
    reason = reason.rpartition("failed: ")[2].replace("FATAL:  ", "").strip()
    if path is not None:
        return DatabaseUnreachable(
            f"cannot open the SQLite database {path}: {reason}; check {DATABASE_SETTING}"
        )
    where = f"PostgreSQL at {libpq.servers(parsed)} (database {parsed.database or '(default)'})"
    if "unsupported startup parameter" in reason:  # PgBouncer refusing the statement timeout
        return UnsupportedDatabaseURL(
            f"cannot connect to {where}: {reason}; a pooler in transaction mode? "
            f"Add ?{POOL_MODE}=transaction to {DATABASE_SETTING}"
        )
    return DatabaseUnreachable(
        f"cannot connect to {where}: {reason}; is the server running there? "
        f"Check {DATABASE_SETTING}"
    )


def _missing_directory(path: Path) -> DatabaseUnreachable:
    return DatabaseUnreachable(
        f"cannot open the SQLite database {path}: directory {path.parent} does not exist; "
        f"create it or change {DATABASE_SETTING}"
    )
