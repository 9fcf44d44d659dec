"""Requests that reach the database in the same turn of the event loop ask it together.

Under load a worker reads many requests from its sockets in one turn of the loop, and each
used to make its own round trip to the database, blocking the loop for it: on PostgreSQL the
worker slept and woke per request, and the backend parsed, planned and ran one statement per
request. Here the first request of a turn schedules one flush behind all the others of that
turn, and the flush decides them all with one call (``run_many``), which shares its reads:
on PostgreSQL one statement, one round trip, for the whole turn
(:func:`service.coverage.decide_each`); on SQLite one read transaction.

The call goes through the deadline gate like a single one (:mod:`service.db_deadline`): inline
on the loop while the database is healthy, else on a pool thread until the earliest deadline
of the batch. A failure of the call answers each request of the batch as ``failed`` says.

**Awaited reads.** Where the store can await its reads on the loop (PostgreSQL on a
connection of the loop's own, :class:`AwaitedReads`), the loop does not block on the batch's
round trip: the batch is decided in steps (:func:`service.coverage.deciding`), each run
inline under the gate, and between them its read is sent and awaited, while the loop reads,
answers and audits other requests. One read is in flight at a time, on the loop's one
connection; the requests that arrive meanwhile wait for it and make the next batch. A batch
of one request, the usual one at light load, is read inline as before: there is nothing to
serve meanwhile, and the awaited way cost it about 90 µs more CPU (a task, two timers, the
loop's reader added and removed, the decision in steps). Under load the requests that come
during one read make the next batch, so the batches that follow are awaited. A read
that has not answered within :data:`~service.db_deadline.INLINE_LIMIT` sends the batches
waiting behind it to the pool threads, as a blocked inline call would; one that outlives its
batch's earliest deadline is abandoned (its connection dropped) and the breaker opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from prometheus_client import Histogram

from service.coverage import BatchFound, BatchReads, Decided, Steps, StoreUnavailable, step
from service.db_deadline import INLINE_LIMIT, MISSED, DeadlineGate

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 128  # requests per call at most: one statement's arrays stay small

SHARED = Histogram(
    "olv_soap_db_batch_requests",
    "Requests decided by one database call (those of one turn of a worker's event loop)",
    buckets=(1, 2, 4, 8, 16, 32, 64, MAX_BATCH),
)


Waiter = tuple[Item, float, "asyncio.Future[Result]"]


@dataclass(frozen=True, slots=True)
class AwaitedReads(Generic[Item]):
    """How a batch is decided with its reads awaited: ``ready`` says whether the calling
    thread can await a read now; ``steps`` are the batch's decision in steps; ``read`` makes
    one read, for at most until a deadline (then :class:`TimeoutError`)."""

    ready: Callable[[], bool]
    steps: Callable[[Sequence[Item]], Steps]
    read: Callable[[BatchReads, float], Awaitable[BatchFound]]


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        gate: DeadlineGate,
        run_many: Callable[[Sequence[Item]], list[Result]],
        failed: Callable[[Exception], Result],
        awaited: AwaitedReads[Item] | None = None,
    ) -> None:
        self._gate = gate
        self._run_many = run_many
        self._failed = failed
        self._awaited = awaited
        self._waiting: list[Waiter[Item, Result]] = []
        self._reading = False  # a batch's read is awaited on the loop: the others wait
        self._slow = False  # ... and it has taken longer than INLINE_LIMIT: they go to the pool
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
        while self._waiting and (self._slow or not self._reading):
            if len(self._waiting) <= MAX_BATCH:
                batch, self._waiting = self._waiting, []
            else:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                self._decide(batch)
            except Exception as exc:  # noqa: BLE001 - no waiter may be left without an answer
                self._settle(batch, exc)

    def _decide(self, batch: list[Waiter[Item, Result]]) -> None:
        SHARED.observe(len(batch))
        items = [item for item, _, _ in batch]
        call = partial(self._run_many, items)
        awaited = self._awaited
        try:
            if self._reading:  # a slow read in flight: this batch goes to the pool
                results: object = MISSED
            elif awaited is not None and len(batch) > 1 and awaited.ready():
                steps = awaited.steps(items)
                outcome = self._gate.inline(partial(step, steps))
                if isinstance(outcome, BatchReads):
                    self._await_reads(batch, steps, outcome, call)
                    return
                results = outcome.decisions if isinstance(outcome, Decided) else MISSED
            else:
                results = self._gate.inline(call)
        except Exception as exc:  # noqa: BLE001 - each waiter gets its failure answer
            self._settle(batch, exc)
            return
        if results is MISSED:
            self._to_pool(batch, call)
        else:
            self._settle(batch, results)  # type: ignore[arg-type]

    def _to_pool(self, batch: list[Waiter[Item, Result]], call: Callable[[], list[Result]]) -> None:
        due = min(d for _, d, _ in batch)
        self._hold(self._on_pool(batch, call, due))

    def _hold(self, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        self._pooled.add(task)
        task.add_done_callback(self._pooled.discard)

    async def _on_pool(
        self,
        batch: list[Waiter[Item, Result]],
        call: Callable[[], list[Result]],
        due: float,
    ) -> None:
        try:
            results = await self._gate.on_pool(call, due)
        except Exception as exc:  # noqa: BLE001 - each waiter gets its failure answer
            self._settle(batch, exc)
        else:
            self._settle(batch, results)

    # --- awaited reads -----------------------------------------------------------------------

    def _await_reads(
        self,
        batch: list[Waiter[Item, Result]],
        steps: Steps,
        reads: BatchReads,
        call: Callable[[], list[Result]],
    ) -> None:
        self._reading = True
        loop = asyncio.get_running_loop()
        slow = loop.call_later(INLINE_LIMIT, self._read_is_slow)
        self._hold(self._reads_awaited(batch, steps, reads, call, slow))

    def _read_is_slow(self) -> None:
        self._slow = True
        self._flush()

    async def _reads_awaited(
        self,
        batch: list[Waiter[Item, Result]],
        steps: Steps,
        reads: BatchReads,
        call: Callable[[], list[Result]],
        slow: asyncio.TimerHandle,
    ) -> None:
        assert self._awaited is not None
        due = min(d for _, d, _ in batch)
        outcome: object = reads
        try:
            while isinstance(outcome, BatchReads):
                try:
                    found = await self._awaited.read(outcome, due)
                except TimeoutError:
                    self._gate.outlived()
                    outcome = step(steps, failure=StoreUnavailable("deadline"))
                except StoreUnavailable as exc:
                    outcome = step(steps, failure=exc)
                else:
                    # The next pass may read the store's cached state again: under the gate.
                    outcome = self._gate.inline(partial(step, steps, found))
        except Exception as exc:  # noqa: BLE001 - each waiter gets its failure answer
            outcome = exc
        finally:
            slow.cancel()
            self._reading = self._slow = False
        if outcome is MISSED:  # the next pass was cut: the whole batch again, on the pool
            self._to_pool(batch, call)
        else:
            self._settle(batch, outcome.decisions if isinstance(outcome, Decided) else outcome)  # type: ignore[arg-type]
        self._flush()  # the requests that came meanwhile

    def _settle(
        self,
        batch: list[Waiter[Item, Result]],
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
