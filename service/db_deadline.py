"""Database calls under the request deadline (SPEC §1 step 1), whatever the database does.

A server-side statement timeout cannot fire when the server is hung (stopped, or its link
dead), and a call blocked inline on the event loop would hold up every request of the worker.
So each worker process runs its database calls on a few threads of its own, one connection
per thread, and a request waits for its call only until its deadline:

- **Fast path.** The event loop hands the call to an idle thread and *blocks* on it for at
  most :data:`BLOCKING_SLICE`. A healthy database answers well within that. Blocking (with
  the GIL released) rather than awaiting matters: an awaited thread competes for the GIL
  with a busy event loop and waits up to the interpreter's switch interval (5 ms) each time
  it needs it, which showed as p99 latency; a blocked loop hands the GIL over at once, and
  the hop costs about 15 µs against ~500 µs of work per request.
- **Slow path.** A call still running after the slice is awaited without blocking the loop,
  until the request's deadline; other requests meanwhile go straight to the slow path.
- **Cut.** A request that gives up on its call has the call cut (:func:`olv.db.interrupt`:
  SQLite's interrupt, or the PostgreSQL socket shut down), so the thread comes back at once
  and its connection is replaced. What cannot be cut (a connect in progress, a SQLite lock
  wait) is bounded by the engine's own client-side timeouts (``olv.db.make_engine``).
- **Breaker.** After a call outlived its request, the database is taken as hung: new requests
  answer SYSU at once instead of piling up behind it, except one trial request at a time,
  at most every :data:`RETRY_SECONDS`; the first call that completes closes the breaker,
  so the service recovers by itself when the database answers again.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any, Generic, TypeVar

from service.coverage import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

THREADS = 4  # per worker process; more only helps while the database is slow, not hung
BLOCKING_SLICE = 0.025  # seconds the event loop waits inline for a call before moving on
RETRY_SECONDS = 1.0  # while the breaker is open, one trial request per this interval

_QUEUED, _RUNNING, _FINISHED, _ABANDONED, _CUT = range(5)


class _Job(Generic[T]):
    __slots__ = ("done", "error", "fn", "notify", "state", "thread", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Lock()
        self.done.acquire()  # released by the thread that ran the call
        self.state = _QUEUED
        self.thread = 0
        self.value: T | None = None
        self.error: Exception | None = None
        self.notify: Callable[[], object] | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class DeadlineGate:
    """Runs database calls on a few threads; callers wait at most until their deadline.

    ``cut(thread_id)`` must make the call running on that thread return soon, from any
    thread, without blocking; ``discard()`` is run on a thread whose call was cut, to drop
    its connection.
    """

    def __init__(
        self,
        cut: Callable[[int], None],
        discard: Callable[[], None],
        threads: int = THREADS,
    ) -> None:
        self._cut = cut
        self._discard = discard
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._tripped = False
        self._retry_at = 0.0
        self._trial: _Job[Any] | None = None
        self._stalled = 0  # requests awaiting a call past the slice (event loop only)
        self._threads = [
            threading.Thread(target=self._work, name=f"olv-db-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    # --- callers ---------------------------------------------------------------------------

    def call(self, fn: Callable[[], T], due: float) -> T:
        """Blocking wait, for callers outside the event loop (the plain WSGI path)."""
        job = self._submit(fn, due)
        if job.done.acquire(timeout=max(0.0, due - time.monotonic())):
            return self._finish(job)
        return self._give_up(job)

    async def acall(self, fn: Callable[[], T], due: float) -> T:
        """Wait on the event loop: inline for the slice, then without blocking the loop."""
        job = self._submit(fn, due)
        if self._stalled == 0:
            inline = min(BLOCKING_SLICE, due - time.monotonic())
            if inline > 0 and job.done.acquire(timeout=inline):
                return self._finish(job)
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with self._lock:
            finished = job.state == _FINISHED
            if not finished:
                job.notify = partial(_wake_from_thread, loop, woken)
        if finished:
            return self._finish(job)
        self._stalled += 1
        try:
            await asyncio.wait_for(woken, max(0.0, due - time.monotonic()))
        except TimeoutError:
            return self._give_up(job)
        finally:
            self._stalled -= 1
        return self._finish(job)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the threads (each closes its connection); a call still running is cut."""
        for _ in self._threads:
            self._jobs.put(None)
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        stuck = [t for t in self._threads if t.is_alive() and t.ident is not None]
        for thread in stuck:
            self._cut(thread.ident or 0)
        end = time.monotonic() + timeout
        for thread in stuck:  # one still connecting cannot be cut: it is a daemon, left behind
            thread.join(max(0.0, end - time.monotonic()))

    # --- internals -------------------------------------------------------------------------

    def _submit(self, fn: Callable[[], T], due: float) -> _Job[T]:
        now = time.monotonic()
        if due <= now:
            raise StoreUnavailable("deadline passed before the database was asked")
        job = _Job(fn)
        with self._lock:
            if self._tripped:
                if self._trial is not None or now < self._retry_at:
                    raise StoreUnavailable("database hung")
                self._trial = job
        self._jobs.put(job)
        return job

    def _finish(self, job: _Job[T]) -> T:
        if self._tripped:  # read without the lock: the fast path stays lock-free here
            with self._lock:
                if self._tripped:
                    log.warning("database answers again")
                self._tripped = False
                self._trial = None
        return job.outcome()

    def _give_up(self, job: _Job[Any]) -> Any:
        with self._lock:
            if job.state == _FINISHED:  # it finished in the meantime: take the answer
                pass
            else:
                if job.state == _RUNNING:
                    job.state = _CUT
                    self._cut(job.thread)
                else:
                    job.state = _ABANDONED
                if not self._tripped:
                    log.error("database call outlived its request; answering SYSU until it answers")
                self._tripped = True
                self._retry_at = time.monotonic() + RETRY_SECONDS
                if self._trial is job:
                    self._trial = None
                raise StoreUnavailable("deadline")
        return self._finish(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._discard()
                return
            with self._lock:
                if job.state == _ABANDONED:
                    continue
                job.state = _RUNNING
                job.thread = threading.get_ident()
            try:
                job.value = job.fn()
            except Exception as exc:  # noqa: BLE001 - handed to the waiter, which re-raises it
                job.error = exc
            with self._lock:
                was_cut = job.state == _CUT
                job.state = _FINISHED
                notify = job.notify
            job.done.release()
            if was_cut:
                self._discard()  # the cut may have landed after the call: start afresh
            elif notify is not None:
                notify()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake_from_thread(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    with suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
        loop.call_soon_threadsafe(_wake, future)
