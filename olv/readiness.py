"""``/readyz``: the database answers a ``SELECT 1`` within a second — and the answer to the
probe comes within that second even when the database hangs.

A hung server (stopped, or its link dead) never answers, and a statement timeout cannot fire
on a server that does not run. So the query runs on a thread of its own, the caller waits for
it at most :data:`READY_SECONDS`, and a query still running then is cut
(:func:`olv.db.interrupt`). At most one query per process is in flight: a probe arriving while
one runs waits for that one (for what is left of its own second), so probes every second
against a hung database never pile up threads or connections. What cannot be cut (a connect
in progress) only keeps the one thread busy until the connect fails or succeeds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from olv.db import interrupt

READY_SECONDS = 1.0

T = TypeVar("T")


def select_one(cursor: Any) -> bool:
    cursor.execute("SELECT 1")
    return bool(cursor.fetchone())


class BoundedQuery(Generic[T]):
    """Runs ``query(cursor)`` on its own thread and connection, one at a time; callers wait
    at most ``seconds``, and a query that outlives its callers is cut."""

    def __init__(
        self, engine: Engine, query: Callable[[Any], T], seconds: float = READY_SECONDS
    ) -> None:
        self.engine = engine
        self.query = query
        self.seconds = seconds
        self._lock = threading.Lock()
        self._running: Future[T | None] | None = None
        self._driver: object | None = None  # the connection of the query in flight

    async def run(self) -> T | None:
        """The query's value, or None when the database failed or did not answer in time."""
        waited = asyncio.wrap_future(self._start())
        try:
            return await asyncio.wait_for(asyncio.shield(waited), self.seconds)
        except TimeoutError:
            self._cut()
            return None

    def _start(self) -> Future[T | None]:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                threading.Thread(
                    target=self._work, args=(self._running,), name="olv-probe", daemon=True
                ).start()
            return self._running

    def _work(self, future: Future[T | None]) -> None:
        value: T | None = None
        answered = False
        driver_error = self.engine.dialect.loaded_dbapi.Error
        conn = None
        try:
            conn = self.engine.raw_connection()
            with self._lock:
                self._driver = conn.driver_connection
            cursor = conn.cursor()
            value = self.query(cursor)
            cursor.close()
            conn.rollback()
            answered = True
        except (SQLAlchemyError, driver_error, OSError):
            value = None
        finally:
            with self._lock:
                self._driver = None
            if conn is not None:
                if not answered:
                    conn.invalidate()  # possibly cut or broken: never back into the pool
                else:
                    conn.close()
            future.set_result(value)

    def _cut(self) -> None:
        with self._lock:
            driver = self._driver
        if driver is not None:
            interrupt(driver)


class Readiness:
    """A server's ``/readyz`` answer from its engine."""

    def __init__(self, engine: Engine, seconds: float = READY_SECONDS) -> None:
        self._probe = BoundedQuery(engine, select_one, seconds)

    async def ready(self) -> bool:
        return bool(await self._probe.run())
