"""Database calls under the request deadline (SPEC §1 step 1), whatever the database does.

A server-side statement timeout cannot fire when the server is hung (stopped, or its link
dead), and a call blocked on the event loop holds up every request of the worker. Yet
handing every call to a thread cost about 80 µs of CPU per request under load (the wake-ups
of two threads; a verification is ~500 µs in all). So a call runs in one of two ways:

- **Inline, while the database is healthy.** The event loop runs the call itself on a
  connection of its own, and a watchdog thread cuts it (:func:`olv.db.interrupt`: SQLite's
  interrupt, or the PostgreSQL socket shut down) once it has run :data:`INLINE_LIMIT`; on
  SQLite that connection waits for a lock no longer than that either. The loop never opens
  that connection itself (a connect cannot be cut): a pool thread does it in the background.
- **On a pool thread, when it is not.** A call that was cut, or any call while the inline
  connection is missing, goes to one of a few threads per worker (one connection each). The
  loop blocks on it for at most :data:`BLOCKING_SLICE` (blocked, it hands the GIL over at
  once; awaited, the thread would wait for a busy loop's GIL), then awaits it without
  blocking, until the request's deadline. A call that outlives its request is cut. A quick
  answer from a pool thread brings the inline way back, and so does time: after a cut the
  inline way is tried again after :data:`INLINE_RETRY` (a quarter second, doubling up to 8 s
  while each try is cut again soon), so that a worker is never pinned to the pool by slow
  pool answers on a starved machine, and a slow database costs one cut per while at most.

A batch's read on PostgreSQL is awaited rather than run inline where the store can
(:mod:`service.coalesce`): the loop does not block on it, so no watchdog is needed; it is
bounded by the batch's earliest deadline and, past it, opens the breaker (:meth:`outlived`).

**What the watchdog counts.** Not wall time: on a loaded machine (2 cores, load 5-15) the
loop's thread is merely descheduled for more than 50 ms in the middle of a quick read, and a
cut then reopened the PostgreSQL connection and moved the worker to the pool (a bench logged
one every 25 ms). It counts the time the loop's thread was *blocked*: wall time less the time
it ran or waited on a run queue (:mod:`service.thread_activity`, Linux's per-thread
``schedstat``), sampled by the watchdog on each of its wake-ups, so the fast path stores two
attributes and nothing more. Per wake-up at most one interval counts: a watchdog that woke
late was itself starved or stopped (a SIGSTOPped worker), which says nothing of the database.
Before the watchdog's first look at a call only its age is known; it counts, up to one
interval, so a hung database is still cut 50-75 ms into the call, as with wall time. And a
call is cut only while its thread is blocked at that moment and not on a lock of the process
(the GIL, whose holder may be the one waiting for a CPU). Not chosen, each alone: the
watchdog's lateness (a punctual watchdog beside a descheduled loop thread still cuts), the
thread's CPU clock (blind to run-queue waits, the common case on a loaded machine) and the
thread's state (one sample: a starved loop caught in a short wait on the database is cut).
A stopped or unreachable database leaves the thread blocked in the kernel: it is cut as
before. What still counts as blocked is a PostgreSQL backend that waits for a CPU while the
loop waits on its socket: from here that is a slow database (a 32-client bench beside two
CPU hogs, load 15 on 2 cores, logged 2 cuts of 51-60 ms where wall time had logged 17).

**Breaker.** After a call outlived its request the database is taken as hung: new requests
answer SYSU at once instead of piling up, except one trial request at a time, at most every
:data:`RETRY_SECONDS`; the first call that completes closes the breaker, so the service
recovers by itself when the database answers again. What cannot be cut (a connect in
progress, a SQLite lock wait on a pool thread) is bounded by the engine's client-side
timeouts (``olv.db.make_engine``).
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
from typing import Any, Generic, Protocol, TypeVar

from service.coverage import StoreUnavailable
from service.thread_activity import ThreadActivity

log = logging.getLogger(__name__)

T = TypeVar("T")

THREADS = 4  # per worker process; more only helps while the database is slow, not hung
INLINE_LIMIT = 0.05  # seconds an inline call may block the event loop before it is cut
TICK = INLINE_LIMIT / 2  # the watchdog's polling interval
INLINE_RETRY = (0.25, 8.0)  # after a cut, the inline way is tried again after (first, at most)
BLOCKING_SLICE = 0.025  # seconds the loop waits blocked for a pool call before awaiting it
RETRY_SECONDS = 1.0  # while the breaker is open, one trial request per this interval
_REOPEN_SECONDS = 0.5  # at most one attempt per this interval to open the inline connection

_QUEUED, _RUNNING, _FINISHED, _ABANDONED, _CUT = range(5)


class Missed:
    """The type of :data:`MISSED`."""


MISSED = Missed()  # what :meth:`DeadlineGate.inline` returns for a call it did not run


class Connections(Protocol):
    """What the gate needs from the store that owns the per-thread connections."""

    answered_at: float  # time.monotonic() when the database last answered a query

    def reserve(self, thread_id: int, wait_seconds: float) -> None: ...
    def open_for(self, thread_id: int) -> None: ...
    def connection_of(self, thread_id: int) -> object | None: ...
    def interrupt(self, thread_id: int) -> None: ...
    def discard(self, thread_id: int | None = None) -> None: ...


class _Job(Generic[T]):
    __slots__ = (
        "blocked", "done", "error", "fn", "notify", "state", "submitted", "thread", "value",
    )  # fmt: skip

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.submitted = time.monotonic()
        self.done = threading.Lock()
        self.done.acquire()  # released by the thread that ran the call
        self.state = _QUEUED
        self.thread = 0
        self.value: T | None = None
        self.error: Exception | None = None
        self.blocked = 0.0  # seconds the thread that ran it spent blocked (not on a CPU)
        self.notify: Callable[[], object] | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class DeadlineGate:
    """Runs database calls so that callers wait at most until their deadline."""

    def __init__(self, connections: Connections, threads: int = THREADS) -> None:
        self._db = connections
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._tripped = False
        self._retry_at = 0.0
        self._trial: _Job[Any] | None = None
        self._stalled = 0  # requests awaiting a pool call past the slice (event loop only)
        self._loop_thread = 0  # the event loop's thread, once known
        self._loop_activity: ThreadActivity | None = None
        self._inline = True
        self._inline_retry_at = 0.0  # off the inline way: when it is tried again regardless
        self._inline_backoff = INLINE_RETRY[0]
        self._reopen_at = 0.0
        self._watched: tuple[int, float] | None = None  # (thread, cut after) of the inline call
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"olv-db-{n}", daemon=True)
            for n in range(threads)
        ]
        self._threads.append(threading.Thread(target=self._watch, name="olv-db-watch", daemon=True))
        for thread in self._threads:
            thread.start()

    # --- callers ---------------------------------------------------------------------------

    def call(self, fn: Callable[[], T], due: float) -> T:
        """Blocking wait on a pool thread, for callers outside the event loop (plain WSGI)."""
        job = self._submit(fn, due)
        if job.done.acquire(timeout=max(0.0, due - time.monotonic())):
            return self._finish(job)
        return self._give_up(job)

    async def acall(self, fn: Callable[[], T], due: float) -> T:
        """For the event loop: inline when healthy, else on a pool thread until ``due``."""
        value = self.inline(fn)
        if value is MISSED:
            return await self.on_pool(fn, due)
        return value  # type: ignore[return-value]

    def inline(self, fn: Callable[[], T]) -> T | Missed:
        """``fn`` run on the calling thread (the event loop) while the database is healthy,
        under the watchdog; :data:`MISSED` when it must go to a pool thread (:meth:`on_pool`)."""
        me = threading.get_ident()
        if me != self._loop_thread:
            self._loop_thread = me
            self._loop_activity = ThreadActivity(threading.get_native_id(), me)
            self._db.reserve(me, INLINE_LIMIT)
        if (self._inline or self._inline_again()) and not self._tripped:
            conn = self._db.connection_of(me)
            if conn is not None:
                self._watched = (me, time.monotonic())
                try:
                    value = fn()
                finally:
                    self._watched = None
                if self._db.connection_of(me) is conn:
                    return value
                # Cut, or its connection failed: the answer may be SYSU for no good reason.
                # Ask again on a pool thread; stay there until the database looks healthy.
                self._leave_inline()
            else:
                self._open_inline_connection(me)
        return MISSED

    def close(self, timeout: float = 1.0) -> None:
        """Stop the threads (each closes its connection); a call still running is cut."""
        self._stopped.set()
        workers = self._threads[:-1]
        for _ in workers:
            self._jobs.put(None)
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        stuck = [t for t in workers if t.is_alive() and t.ident is not None]
        for thread in stuck:
            self._db.interrupt(thread.ident or 0)
        end = time.monotonic() + timeout
        for thread in stuck:  # one still connecting cannot be cut: it is a daemon, left behind
            thread.join(max(0.0, end - time.monotonic()))

    # --- the pool --------------------------------------------------------------------------

    async def on_pool(self, fn: Callable[[], T], due: float) -> T:
        """``fn`` on a pool thread; the caller waits at most until ``due``."""
        started = time.monotonic()
        job = self._submit(fn, due)
        if self._stalled == 0:
            inline = min(BLOCKING_SLICE, due - started)
            if inline > 0 and job.done.acquire(timeout=inline):
                return self._quick(job, started)
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with self._lock:
            finished = job.state == _FINISHED
            if not finished:
                job.notify = partial(_wake_from_thread, loop, woken)
        if finished:
            return self._quick(job, started)
        self._stalled += 1
        try:
            await asyncio.wait_for(woken, max(0.0, due - time.monotonic()))
        except TimeoutError:
            return self._give_up(job)
        finally:
            self._stalled -= 1
        return self._quick(job, started)

    def _quick(self, job: _Job[T], started: float) -> T:
        # The time the pool thread was blocked, not the wall time: on a loaded machine the
        # wake-ups of the thread and of the loop alone take longer than INLINE_LIMIT / 2.
        if job.blocked < INLINE_LIMIT / 2 and job.error is None:
            self._inline = True
        return self._finish(job)

    def _leave_inline(self) -> None:
        """Off the inline way, until a quick answer or a while, longer after each cut that
        follows soon after a return (a slow database costs one cut per while at most)."""
        now = time.monotonic()
        if now < self._inline_retry_at + self._inline_backoff:
            self._inline_backoff = min(self._inline_backoff * 2, INLINE_RETRY[1])
        else:
            self._inline_backoff = INLINE_RETRY[0]
        self._inline = False
        self._inline_retry_at = now + self._inline_backoff

    def _inline_again(self) -> bool:
        if time.monotonic() < self._inline_retry_at:
            return False
        self._inline = True
        return True

    def _open_inline_connection(self, thread_id: int) -> None:
        now = time.monotonic()
        if now < self._reopen_at:
            return
        self._reopen_at = now + _REOPEN_SECONDS
        with suppress(StoreUnavailable):  # breaker open: a later request tries again
            self._submit(partial(self._db.open_for, thread_id), now + 60.0, trial=False)

    def _submit(self, fn: Callable[[], T], due: float, trial: bool = True) -> _Job[T]:
        """Queue a call; ``trial``: it may be the one that tests a hung database (a request
        waits for it; nobody waits for a background call, which could not close the breaker)."""
        now = time.monotonic()
        if due <= now:
            raise StoreUnavailable("deadline passed before the database was asked")
        job = _Job(fn)
        with self._lock:
            if self._tripped:
                if not trial or self._trial is not None or now < self._retry_at:
                    raise StoreUnavailable("database hung")
                self._trial = job
        self._jobs.put(job)
        return job

    def _finish(self, job: _Job[T]) -> T:
        if self._tripped:  # read without the lock: the fast path stays lock-free here
            with self._lock:
                if self._trial is job:
                    self._trial = None
                    # Only an answer from the database closes the breaker: a trial can also
                    # end at once without one (a cached health failure, a refused connect).
                    if self._db.answered_at >= job.submitted:
                        log.warning("database answers again")
                        self._tripped = False
        return job.outcome()

    def _give_up(self, job: _Job[Any]) -> Any:
        with self._lock:
            if job.state != _FINISHED:
                if job.state == _RUNNING:
                    job.state = _CUT
                    self._db.interrupt(job.thread)
                else:
                    job.state = _ABANDONED
                self._trip()
                if self._trial is job:
                    self._trial = None
                raise StoreUnavailable("deadline")
        return self._finish(job)  # it finished in the meantime: take the answer

    def outlived(self) -> None:
        """A read awaited on the event loop outlived its request: the database is taken as
        hung, as for a call on a pool thread."""
        with self._lock:
            self._trip()

    def _trip(self) -> None:
        """Open the breaker (the lock held)."""
        if not self._tripped:
            log.error("database call outlived its request; answering SYSU meanwhile")
        self._tripped = True
        self._leave_inline()
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _work(self) -> None:
        me = ThreadActivity.of_current()
        while True:
            job = self._jobs.get()
            if job is None:
                self._db.discard()
                me.close()
                return
            with self._lock:
                if job.state == _ABANDONED:
                    continue
                job.state = _RUNNING
                job.thread = threading.get_ident()
            started, active = time.monotonic(), me.active()
            try:
                job.value = job.fn()
            except Exception as exc:  # noqa: BLE001 - handed to the waiter, which re-raises it
                job.error = exc
            job.blocked = time.monotonic() - started - (me.active() - active)
            with self._lock:
                was_cut = job.state == _CUT
                job.state = _FINISHED
                notify = job.notify
            job.done.release()
            if was_cut:
                self._db.discard()  # the cut may have landed after the call: start afresh
            elif notify is not None:
                notify()

    def _watch(self) -> None:
        """Cut an inline call that has been blocked, the event loop with it, for too long.

        Polling (a few dozen wake-ups a second) rather than arming a timer per call: arming
        would cost the fast path a thread wake-up, which is what inline calls avoid.
        """
        watch = _Watch()
        while not self._stopped.wait(TICK):
            watched, activity = self._watched, self._loop_activity
            if watched is None or activity is None or not watch.overdue(watched, activity):
                continue
            # Checked again: a later call may have started meanwhile (a cut that still lands
            # on it only sends that call to a pool thread too).
            if self._watched is watched:
                log.warning(
                    "database call blocked the event loop; cut, asked on a thread",
                    extra={"blocked_ms": round(watch.charged * 1000)},
                )
                self._db.interrupt(watched[0])


class _Watch:
    """The watchdog's account of the inline call it watches: the time that call has spent
    blocked, which alone counts towards :data:`INLINE_LIMIT` (see the module's docstring)."""

    def __init__(self) -> None:
        self.call: tuple[int, float] | None = None
        self.charged = 0.0
        self._at = 0.0
        self._active = 0.0

    def overdue(self, call: tuple[int, float], activity: ThreadActivity) -> bool:
        now = time.monotonic()
        active = activity.active()
        if call is not self.call:
            # Before this first look nothing is known of the call but its age; it counts, up
            # to one interval (longer only if this thread woke late: then all were starved).
            self.call, self.charged = call, min(now - call[1], TICK)
        else:
            # Wall time less the time the loop's thread ran or waited for a CPU; never more
            # than one interval: this thread overslept only if the whole process was stopped
            # or starved.
            blocked = min(now - self._at, TICK) - (active - self._active)
            self.charged += max(0.0, blocked)
        self._at, self._active = now, active
        return self.charged >= INLINE_LIMIT and activity.blocked_on_io()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake_from_thread(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    with suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
        loop.call_soon_threadsafe(_wake, future)
