"""Database engine, sessions and migrations.

SQLite is the embedded default; PostgreSQL (``postgresql+psycopg://``) is the production engine.
The schema is created and changed only by Alembic (``olv db upgrade``).
"""

from __future__ import annotations

import math
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

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


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, wait_seconds: float | None = None, **kwargs: Any) -> Engine:
    """An engine tuned for OLV's workload: many short reads, batched writes.

    ``wait_seconds`` bounds, on the client side, how long one call may wait for the database:
    SQLite's lock wait (busy timeout; default 30 s, for imports that share the file) and
    PostgreSQL's connect time, plus a server-side statement timeout. A server that hangs
    mid-query is not covered by these: :func:`interrupt` makes such a call return.
    """
    if is_sqlite(url):
        wait = 30.0 if wait_seconds is None else wait_seconds
        connect_args = {"check_same_thread": False, "timeout": wait}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", partial(_sqlite_pragmas, int(wait * 1000)))
        return engine
    if wait_seconds is not None:
        connect_args = dict(kwargs.pop("connect_args", {}))
        # libpq counts whole seconds and waits at least 2: round up, never below the bound.
        connect_args.setdefault("connect_timeout", max(2, math.ceil(wait_seconds)))
        connect_args.setdefault("options", f"-c statement_timeout={int(wait_seconds * 1000)}")
        kwargs["connect_args"] = connect_args
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_recycle", 1800)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(busy_ms: int, dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # The lock wait first: the journal-mode switch below already needs a lock.
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    # WAL lets SOAP workers read while an import or the audit writer commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One session, one transaction: committed on success, rolled back on any error."""
    with session_factory(engine)() as session, session.begin():
        yield session


def alembic_config(url: str):  # -> alembic.config.Config (import kept lazy for the SOAP workers)
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Create or migrate the schema to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
