"""Requests that reach the database in the same turn of the event loop ask it together.

Under load a worker reads many requests from its sockets in one turn of the loop, and each
used to make its own round trip to the database, blocking the loop for it: on PostgreSQL the
worker slept and woke per request, and the backend parsed, planned and ran one statement per
request. Here the first request of a turn schedules one flush behind all the others of that
turn, and the flush decides them all with one call (``run_many``), which shares its reads:
one statement, one round trip, for the whole turn (:func:`service.coverage.decide_each`).

The call goes through the deadline gate like a single one (:mod:`service.db_deadline`): inline
on the loop while the database is healthy, else on a pool thread until the earliest deadline
of the batch. A failure of the call answers each request of the batch as ``failed`` says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial
from typing import Generic, TypeVar

from prometheus_client import Histogram

from service.db_deadline import MISSED, DeadlineGate

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 128  # requests per call at most: one statement's arrays stay small

SHARED = Histogram(
    "olv_soap_db_batch_requests",
    "Requests decided by one database call (those of one turn of a worker's event loop)",
    buckets=(1, 2, 4, 8, 16, 32, 64, MAX_BATCH),
)


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        gate: DeadlineGate,
        run_many: Callable[[Sequence[Item]], list[Result]],
        failed: Callable[[Exception], Result],
    ) -> None:
        self._gate = gate
        self._run_many = run_many
        self._failed = failed
        self._waiting: list[tuple[Item, float, asyncio.Future[Result]]] = []
        self._pooled: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references

    async def __call__(self, item: Item, due: float) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        if not self._waiting:
            # call_soon runs after every callback already queued: the requests of this turn.
            loop.call_soon(self._flush)
        self._waiting.append((item, due, future))
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), MAX_BATCH):
            batch = waiting[start : start + MAX_BATCH]
            try:
                self._decide(batch)
            except Exception as exc:  # noqa: BLE001 - no waiter may be left without an answer
                self._settle(batch, exc)

    def _decide(self, batch: list[tuple[Item, float, asyncio.Future[Result]]]) -> None:
        SHARED.observe(len(batch))
        call = partial(self._run_many, [item for item, _, _ in batch])
        try:
            results = self._gate.inline(call)
        except Exception as exc:  # noqa: BLE001 - each waiter gets its failure answer
            self._settle(batch, exc)
            return
        if results is MISSED:
            due = min(d for _, d, _ in batch)
            task = asyncio.get_running_loop().create_task(self._on_pool(batch, call, due))
            self._pooled.add(task)
            task.add_done_callback(self._pooled.discard)
        else:
            self._settle(batch, results)  # type: ignore[arg-type]

    async def _on_pool(
        self,
        batch: list[tuple[Item, float, asyncio.Future[Result]]],
        call: Callable[[], list[Result]],
        due: float,
    ) -> None:
        try:
            results = await self._gate.on_pool(call, due)
        except Exception as exc:  # noqa: BLE001 - each waiter gets its failure answer
            self._settle(batch, exc)
        else:
            self._settle(batch, results)

    def _settle(
        self,
        batch: list[tuple[Item, float, asyncio.Future[Result]]],
        outcome: list[Result] | Exception,
    ) -> None:
        if not isinstance(outcome, Exception) and len(outcome) != len(batch):
            outcome = RuntimeError(f"{len(outcome)} answers for {len(batch)} requests")
        if isinstance(outcome, Exception):
            answer = self._failed(outcome)  # once: one failure, one log line
            outcome = [answer] * len(batch)
        for (_, _, future), result in zip(batch, outcome, strict=True):
            if not future.done():  # a waiter cancelled meanwhile (its client went away)
                future.set_result(result)
