"""A lock held on the state database by another connection, as a long administrative
transaction would hold it: on PostgreSQL a row lock on the rows a query selects, on SQLite
(one writer per file) the file's write lock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from olv import db

HOLD_SECONDS = 20.0  # longest a lock is held; far past the portal's 5-s budget


@contextmanager
def held(url: str, rows: str, params: Mapping[str, Any]) -> Iterator[None]:
    """PostgreSQL: ``rows`` (a ``SELECT … FOR UPDATE``) run in a transaction that stays open;
    SQLite: the file's write lock. Held until the block ends (``HOLD_SECONDS`` at most)."""
    release = threading.Event()
    taken = threading.Event()

    def hold() -> None:
        if db.is_sqlite(url):
            writer = sqlite3.connect(make_url(url).database or "", isolation_level=None)
            try:
                writer.execute("BEGIN IMMEDIATE")
                taken.set()
                release.wait(HOLD_SECONDS)
                writer.execute("ROLLBACK")
            finally:
                writer.close()
            return
        engine = db.make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(rows), dict(params))
                taken.set()
                release.wait(HOLD_SECONDS)
        finally:
            engine.dispose()

    holder = threading.Thread(target=hold, name="lock-holder")
    holder.start()
    try:
        assert taken.wait(10), "the lock was not taken"
        yield
    finally:
        release.set()
        holder.join(HOLD_SECONDS + 5)
