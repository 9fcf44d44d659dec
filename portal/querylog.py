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
from typing import Any

from sqlalchemy import Engine, insert

from portal.models import InsurerCall, QueryLog

FLUSH_SECONDS = 0.2
log = logging.getLogger(__name__)


def new_query_id() -> str:
    """Time-ordered (sorts by creation) and unguessable: 12 hex digits of milliseconds since
    the epoch, then 20 random hex digits (80 bits)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class QueryLogWriter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queries: list[dict[str, Any]] = []
        self._calls: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def add(self, query: dict[str, Any], calls: list[dict[str, Any]]) -> None:
        self._queries.append(query)
        self._calls.extend(calls)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - keep the rows and retry; never kill the loop
                log.exception("query log write failed; retrying")

    async def flush(self) -> None:
        async with self._lock:
            queries, calls = self._queries, self._calls
            if not queries and not calls:
                return
            self._queries, self._calls = [], []
            try:
                await asyncio.to_thread(self._write, queries, calls)
            except BaseException:
                # Put them back in front, so nothing is lost and order is kept.
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
