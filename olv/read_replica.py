"""A PostgreSQL hot standby for the read-mostly queries (``OLV_DATABASE_READ_URL``).

The insurer's policy look-ups and the state's plate and book-of-business look-ups may read a
standby instead of the primary; everything else (writes, sign-in, the logs) stays on the
primary. The standby is used only while it is known to be fresh and answering:

- **Lag.** Once a second a thread of each process asks the standby how far behind it is
  (:data:`LAG_SQL`), and the standby is used only within ``OLV_DATABASE_READ_MAX_LAG_SECONDS``.
  Lag is counted from the standby alone, with no heartbeat table: zero when it has replayed
  everything it received while still streaming from the primary (an idle primary sends
  nothing, and nothing is missing), otherwise the age of the last transaction it replayed.
  So a standby whose replay is paused, delayed or slow, or that lost its primary, drops out
  once its newest replayed commit is older than the limit. The first commit after a long idle
  spell can make a standby that is a moment behind look old for one check (it then reads from
  the primary for a second: the safe side). A standby that still believes it is streaming
  while it is cut off from a primary that keeps writing is noticed only after the standby's
  ``wal_receiver_timeout`` (60 s by default; lower it on the standby for a tighter bound). A
  promoted standby (no longer in recovery) has no lag.
- **Failure.** A read on the standby that fails, or runs longer than :data:`CALL_SECONDS`
  (its connection is cut: a hung server answers nothing, not even a statement timeout), is
  asked again of the primary, and the standby is left out until a later check finds it fit.
  A check that cannot connect or does not answer in time leaves it out too. Every change of
  state is logged once, with the reason.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from olv import libpq
from olv.config import Settings
from olv.db import interrupt, is_sqlite, make_engine
from olv.errors import UnsupportedDatabaseURL

log = logging.getLogger(__name__)

READ_URL_SETTING = "OLV_DATABASE_READ_URL"
CHECK_SECONDS = 1.0  # how often each process measures the standby's lag
CALL_SECONDS = 1.0  # a read (or a check) on the standby running longer is cut
_WATCH_SECONDS = 0.05  # how often overdue calls are looked for

# Seconds behind the primary; NULL when unknown (nothing replayed since the standby started).
LAG_SQL = """
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
       AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0
  ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
END
"""


def check_read_url(settings: Settings) -> None:
    """Refuse a read URL that cannot be a standby of the configured database."""
    url = settings.database_read_url
    if not url:
        return
    if not url.startswith("postgresql+psycopg://") or is_sqlite(settings.database_url):
        shown = f"{url.partition('://')[0]}://…" if "://" in url else "…"  # never a password
        raise UnsupportedDatabaseURL(
            f"{READ_URL_SETTING}={shown!r} is not supported: a read replica is a PostgreSQL "
            "standby (postgresql+psycopg://…) of a PostgreSQL OLV_DATABASE_URL"
        )


def from_settings(settings: Settings) -> ReadReplica | None:
    """The configured standby, its lag checks running; None when there is none."""
    if not settings.database_read_url:
        return None
    check_read_url(settings)
    replica = ReadReplica(settings.database_read_url, settings.database_read_max_lag_seconds)
    replica.start()
    return replica


class ReadReplica:
    """One standby as seen by one process: whether to read it now, and its connections."""

    def __init__(
        self,
        url: str,
        max_lag_seconds: float,
        *,
        check_seconds: float = CHECK_SECONDS,
        call_seconds: float = CALL_SECONDS,
    ) -> None:
        self.max_lag_seconds = max_lag_seconds
        self.check_seconds = check_seconds
        self.call_seconds = call_seconds
        self.url = url
        # Server-side statement timeout and libpq's connect timeout from the same bound.
        self.engine: Engine = make_engine(url, wait_seconds=call_seconds)
        self.conninfo = libpq.conninfo(url)  # for asyncio pools (the portal)
        self.where = libpq.servers(url)
        self._usable_until = float("-inf")  # time.monotonic() until which reads may go here
        self._used: bool | None = None  # the state last logged
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[Any, float]] = {}  # call → (driver connection, cut at)
        self._tickets = itertools.count()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._check_loop, name="olv-replica-lag", daemon=True),
            threading.Thread(target=self._watch_loop, name="olv-replica-watch", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def close(self, timeout: float = 1.0) -> None:
        self._stopped.set()
        with self._lock:
            for conn, _ in self._watched.values():
                interrupt(conn)
        end = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, end - time.monotonic()))
        self.engine.dispose()

    def usable(self) -> bool:
        """Whether reads go to the standby now (no I/O: the checks decide in the background).

        A good check lasts until the next one is due plus a call's bound: when checks stop
        coming (the standby hangs and the check is stuck on it), reads leave it by themselves.
        """
        return time.monotonic() < self._usable_until

    def failed(self, exc: BaseException) -> None:
        """A read on the standby failed or was cut: leave it out until a later check."""
        self._usable_until = float("-inf")
        self._report(False, f"a read failed or took over {self.call_seconds:g} s", exc)

    @contextmanager
    def bounded(self, driver_connection: Any) -> Iterator[None]:
        """Calls on ``driver_connection`` inside the block are cut after :attr:`call_seconds`
        (the connection is then unusable: the caller discards it)."""
        ticket = next(self._tickets)
        with self._lock:
            self._watched[ticket] = (driver_connection, time.monotonic() + self.call_seconds)
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(ticket, None)

    # --- background ------------------------------------------------------------------------

    def _check_loop(self) -> None:
        conn: Any = None
        errors = (self.engine.dialect.loaded_dbapi.Error, SQLAlchemyError, OSError)
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = self.engine.raw_connection()
                    conn.driver_connection.autocommit = True
                with self.bounded(conn.driver_connection):
                    cursor = conn.cursor()
                    cursor.execute(LAG_SQL)
                    lag = cursor.fetchone()[0]
                    cursor.close()
                self._judge(lag, started)
            except errors as exc:
                if conn is not None:
                    with suppress(*errors):
                        conn.invalidate()
                    conn = None
                self._usable_until = float("-inf")
                self._report(False, "it does not answer", exc)
            self._stopped.wait(max(0.0, self.check_seconds - (time.monotonic() - started)))
        if conn is not None:
            with suppress(*errors):
                conn.close()

    def _judge(self, lag: float | None, started: float) -> None:
        if lag is None:
            self._usable_until = float("-inf")
            self._report(False, "its lag is unknown (no transaction replayed yet)")
        elif lag > self.max_lag_seconds:
            self._usable_until = float("-inf")
            self._report(
                False, f"it lags {lag:.1f} s behind the primary (limit {self.max_lag_seconds:g} s)"
            )
        else:
            self._usable_until = started + self.check_seconds + self.call_seconds
            self._report(True, f"it lags {lag:.1f} s (limit {self.max_lag_seconds:g} s)")

    def _report(self, used: bool, reason: str, exc: BaseException | None = None) -> None:
        if used == self._used:
            return
        self._used = used
        fields: dict[str, object] = {"replica": self.where, "reason": reason}
        if exc is not None:
            fields["error"] = type(exc).__qualname__  # not its message: it may quote a query
        if used:
            log.info("read replica in use", extra=fields)
        else:
            log.warning("read replica left out; reading from the primary", extra=fields)

    def _watch_loop(self) -> None:
        while not self._stopped.wait(_WATCH_SECONDS):
            now = time.monotonic()
            with self._lock:
                overdue = [t for t, (_, cut_at) in self._watched.items() if now > cut_at]
                for ticket in overdue:
                    interrupt(self._watched.pop(ticket)[0])
