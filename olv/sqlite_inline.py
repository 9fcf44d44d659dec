"""Short SQLite writes run on the event loop's own thread when they need not wait for a lock.

A server's small writes on every request (the portal's rate-limit takes, its query log) used to
go to a worker thread. Each hand-off costs more than the write itself: the thread must win the
interpreter lock from a busy event loop, give it up again at every SQLite call, and hand the
result back. On a 2-core machine at 300 verifications a second those hand-offs, not SQLite,
made the portal's slowest percent of answers (bench/RESULTS.md, "State portal"): a take of
0.2 ms took 5-20 ms through the thread.

So a write is first tried here, on the loop, on a connection of its own, and only if it can
start at once:

- this process's writers take turns on one lock per file (:func:`olv.db.sqlite_write_lock`);
  held by another thread, the write is not tried here;
- another process holding SQLite's own write lock answers at once (``busy_timeout = 0``), never
  in SQLite's busy wait, which sleeps;
- the connection never checkpoints by itself (``wal_autocheckpoint = 0``): a checkpoint
  writes the database file and waits for the disk, which the loop must never do. The owner
  runs :func:`checkpoint` on a thread instead, every :data:`CHECKPOINT_SECONDS`.

Either refusal returns :data:`BUSY` and the caller takes its usual way (a thread that waits
its turn, within its deadline); nothing of the attempt is left behind (rolled back).

A write that is still running after :data:`LIMIT_SECONDS` (a read that finds its pages on a
slow disk, a statement that turned out long) is cut by a watchdog thread (SQLite's
``interrupt``), rolled back, and answered :data:`BUSY` too: its work goes to the thread, and so
does every write for a while after (:data:`OFF_SECONDS`, doubling while the cuts follow one
another), so a slow database costs the loop one cut per while at most. What no interrupt can
cut (a call blocked in the kernel on a dead disk) holds the loop until it returns, as it
holds a thread; a database on a local disk is what SQLite is for.

Any other error is raised, as it would be from the thread, after a rollback; the connection
is then closed and made again for the next write.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast

from sqlalchemy import Engine

from olv import db

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLite's primary result codes for "another connection holds the lock" (the extended codes
# keep them in their low byte).
_LOCK_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

# How often the owner should checkpoint (write the log's pages into the database file): the
# log then stays near a second's writes, as SQLite's own 1,000-page threshold would keep it.
CHECKPOINT_SECONDS = 1.0
LIMIT_SECONDS = 0.05  # a write on the loop running longer than this is cut
OFF_SECONDS = (0.25, 8.0)  # after a cut, writes go to threads for (first, at most) this long


class Busy:
    """The type of :data:`BUSY`."""


BUSY = Busy()  # what :meth:`InlineWriter.run` returns for a write it did not run


class InlineWriter:
    """One connection to ``engine``'s SQLite file for writes tried on the calling thread."""

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError("inline writes are for SQLite")
        self.engine = engine
        self._lock = db.sqlite_write_lock(engine)
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self.written_at = 0.0  # time.monotonic() of the last commit here
        # The watchdog's interrupt and the end of a write never cross: it cuts only a write
        # still under way, never the next one.
        self._guard = threading.Lock()
        self._since = 0.0  # time.monotonic() when the write under way began; 0: none
        self._cut = False
        self._off_until = 0.0
        self._off_for = OFF_SECONDS[0]
        self._cut_at = -math.inf
        self._watchdog: threading.Thread | None = None

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T | Busy:
        """``work(connection)`` (which commits what it writes), or :data:`BUSY` when a lock
        is held elsewhere, or the write was cut, or writes go to threads for now; raises what
        ``work`` raises otherwise, its transaction rolled back."""
        if self._closed or self._lock is None or time.monotonic() < self._off_until:
            return BUSY
        if not self._lock.acquire(blocking=False):
            return BUSY
        try:
            conn = self._connection()
            self._watch()
            self._cut = False
            self._since = time.monotonic()
            try:
                result = work(conn)
            except sqlite3.OperationalError as error:
                cut = self._ended()
                if _rolled_back(conn) and (cut or error.sqlite_errorcode & 0xFF in _LOCK_CODES):
                    return BUSY
                self._drop()
                raise
            except BaseException:
                self._ended()
                if not _rolled_back(conn):
                    self._drop()
                raise
            self._ended()
            self.written_at = time.monotonic()
            return result
        finally:
            self._lock.release()

    def close(self) -> None:
        self._closed = True
        if self._lock is not None and self._lock.acquire(timeout=1.0):
            try:
                self._drop()
            finally:
                self._lock.release()

    def _ended(self) -> bool:
        """The write is over; whether the watchdog cut it (it then goes to threads a while)."""
        with self._guard:
            self._since = 0.0
            cut = self._cut
        if cut:
            now = time.monotonic()
            # Doubling while the cuts come soon after one another; a quiet stretch starts over.
            first, most = OFF_SECONDS
            quiet = now - self._cut_at > self._off_for + most
            self._off_for = first if quiet else min(most, self._off_for * 2)
            self._cut_at = now
            self._off_until = now + self._off_for
            log.warning(
                "SQLite write on the event loop cut; writes go to threads for a while",
                extra={"seconds": self._off_until - time.monotonic()},
            )
        return cut

    def _watch(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watching, name="olv-sqlite-inline-watchdog", daemon=True
            )
            self._watchdog.start()

    def _watching(self) -> None:
        while not self._closed:
            time.sleep(LIMIT_SECONDS / 2)
            with self._guard:
                since, conn = self._since, self._conn
                if since and conn is not None and time.monotonic() - since > LIMIT_SECONDS:
                    self._cut = True
                    conn.interrupt()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            made = self.engine.raw_connection()  # the engine's pragmas (WAL, foreign keys)
            conn = cast("sqlite3.Connection", made.driver_connection)
            made.detach()  # out of the pool: this writer owns it
            try:
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        with self._guard:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _rolled_back(conn: sqlite3.Connection) -> bool:
    """Whatever ``conn`` had begun undone; False when even that failed."""
    try:
        conn.rollback()
    except sqlite3.Error:
        return False
    return True


def checkpoint(engine: Engine) -> None:
    """Copy the write-ahead log's pages into the database file, so that the log starts over:
    for a thread, never the event loop.

    A checkpoint that runs beside the writers (``PASSIVE``) copies what was committed when it
    began, but at hundreds of commits a second the log has grown again by its end, and SQLite
    starts the log over only for a writer that finds all of it copied: the file grew by
    megabytes a second. So the bulk is copied beside the writers, and the few pages committed
    meanwhile with this process's writers held off (:func:`olv.db.sqlite_write_lock`): the next
    write then starts the log over. The writes of that moment take their thread's way
    (:meth:`InlineWriter.run` finds the lock held)."""
    with db.read_cursor(engine) as cursor:
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        cursor.fetchall()
        with db.write_turn(db.sqlite_write_lock(engine)):
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
