"""Writing the query log and the insurer-call log in small batches, off the request path.

Each verification adds one ``query_log`` row and one ``insurer_calls`` row per call; a
background task writes what has gathered every ``FLUSH_SECONDS`` in one transaction (in a
worker thread, so a slow database never holds the event loop). Reading a query back first
flushes, so ``GET /api/v1/queries/{id}`` finds a query answered a moment ago. A graceful stop
writes everything; a hard crash loses at most the last ``FLUSH_SECONDS`` of rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert

from olv.logging import describe_exception
from portal.models import InsurerCall, QueryLog, SecurityLog

FLUSH_SECONDS = 0.2
PURGE_EVERY_SECONDS = 24 * 3600
log = logging.getLogger(__name__)


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
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, query: dict[str, Any], calls: list[dict[str, Any]]) -> None:
        self._queries.append(query)
        self._calls.extend(calls)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        next_purge = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), FLUSH_SECONDS)
            try:
                await self.flush()
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
            try:
                await asyncio.to_thread(self._write, queries, calls)
            except Exception:
                # Put them back in front, so nothing is lost and order is kept. (A cancelled
                # wait is not a failure: the thread goes on and writes them.)
                self._queries[:0] = queries
                self._calls[:0] = calls
                raise

    def _write(self, queries: list[dict[str, Any]], calls: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            if queries:
                conn.execute(insert(QueryLog), queries)
            if calls:
                conn.execute(insert(InsurerCall), calls)

    async def stop(self) -> None:
        """Let a write in progress finish (never cut a thread off its connection), then write
        what is left."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
