"""A page's database step — one transaction on a worker thread — that ends by the request's
deadline, whatever the database does (sign-in, second factor, enrolment and logout:
:mod:`portal.web.auth`).

:func:`portal.deps.within_budget` answers 503 when the budget is spent but leaves its thread
waiting: the portal's engine sets no statement timeout on PostgreSQL and SQLite waits 30 s for
its write lock, so a row lock or a hung link kept the thread, its pooled connection (and a
sign-in's hash slot, when the step ran under one) long after the answer, and the step could
still commit afterwards (a sign-in counted after its 503). Here the wait itself is bounded:

- PostgreSQL: a statement timeout for the transaction (:func:`olv.db.all_waits_limited`),
  which also ends a wait for a row lock; a link that hangs, where no timeout can come back,
  is cut at the deadline (:func:`olv.db.interrupt`) and its connection discarded.
- SQLite: the connection's busy timeout is the time left, set for each step and put back
  afterwards (the engine's other users keep their own), and a statement running past the
  deadline is interrupted (the same function).

The database's own limits end a moment before the request's deadline, so that a lock wait ends
in a rollback on its thread rather than in a cut; a step still running at the deadline is cut,
and one that ends its work past it rolls back instead of committing what nobody is told of.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from olv import db
from portal.deps import budget_left
from portal.errors import ApiError
from portal.state_reads import too_slow, unavailable

P = ParamSpec("P")
T = TypeVar("T")

# How long before the request's deadline the database's own limits end: enough for the
# thread to see the error and roll back before the request gives up on it.
MARGIN_SECONDS = 0.1
RETRY_AFTER = {"Retry-After": "1"}
# PostgreSQL's errors for a wait cut short: statement timeout (a row-lock wait included) and
# lock timeout. SQLite's: its busy timeout passed, or a statement interrupted at the deadline.
_PG_TIMED_OUT = frozenset({"57014", "55P03"})
_SQLITE_TIMED_OUT = ("database is locked", "database table is locked", "interrupted")


def deadline(request: Request) -> float:
    """When the request's budget ends, on ``time.monotonic()``."""
    return time.monotonic() + budget_left(request)


async def in_budget(
    request: Request, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """:func:`run_step` by the request's deadline."""
    return await run_step(request.app, deadline(request), work, *args, **kwargs)


async def run_step(
    app: Any,
    ends: float,
    work: Callable[Concatenate[Session, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``work(session, *args, **kwargs)`` in one transaction on a worker thread, committed,
    by ``ends`` (``time.monotonic()``); 503 with ``Retry-After`` when the database does not
    answer by then, or is unreachable."""
    return await run_step_on(None, app, ends, work, *args, **kwargs)


async def run_step_on(
    lane: CapacityLimiter | None,
    app: Any,
    ends: float,
    work: Callable[Concatenate[Session, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """:func:`run_step` on one of ``lane``'s threads (the server's shared ones when None):
    steps that anyone can start in numbers wait for their own lane, not in the queue that
    session and token checks share."""
    cut = _Cut()

    def call(session: Session) -> T:
        return work(session, *args, **kwargs)

    try:
        async with asyncio.timeout(max(0.0, ends - time.monotonic())):
            return await to_thread.run_sync(_work, app, cut, ends, call, limiter=lane)
    except TimeoutError:
        cut.give_up()
        raise _retry(too_slow()) from None
    except asyncio.CancelledError:  # nobody waits for the answer any more
        cut.give_up()
        raise
    except DBAPIError as exc:
        if db.is_connection_failure(exc):
            raise _retry(unavailable()) from exc
        if _timed_out(exc):
            raise _retry(too_slow()) from exc
        raise


def _retry(error: ApiError) -> ApiError:
    error.headers = {**(error.headers or {}), **RETRY_AFTER}
    return error


def _timed_out(exc: DBAPIError) -> bool:
    """Whether the database gave up on a wait of the step's (not a fault of the statement)."""
    if isinstance(exc.orig, sqlite3.OperationalError):
        return str(exc.orig).startswith(_SQLITE_TIMED_OUT)
    return getattr(exc.orig, "sqlstate", None) in _PG_TIMED_OUT


class _Cut:
    """The driver connection a step's thread is using, for the event loop to cut when the step
    is given up; never one that is back in the pool (someone else's by then)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._driver: Any = None
        self._given_up = False
        self._was_cut = False

    def hold(self, driver: Any) -> bool:
        """The thread starts on ``driver``; False when the step was given up meanwhile."""
        with self._lock:
            if self._given_up:
                return False
            self._driver = driver
            return True

    def let_go(self) -> bool:
        """The thread is done with its connection; True when it was cut meanwhile (it must
        not go back to the pool)."""
        with self._lock:
            self._driver = None
            return self._was_cut

    def give_up(self) -> None:
        """Nobody waits for the step any more: cut the connection it is on, if any, so that
        its thread returns now (a read on a hung link would wait forever)."""
        with self._lock:
            self._given_up = True
            if self._driver is not None:
                self._was_cut = True
                db.interrupt(self._driver)  # never blocks


def _work(app: Any, cut: _Cut, ends: float, call: Callable[[Session], T]) -> T:
    """On the worker thread: the step in a transaction of its own connection, its waits bounded
    by ``ends``."""
    if _left(ends) <= 0:
        raise TimeoutError  # queued for a thread past the deadline: not begun
    engine: Engine = app.state.engine
    with engine.connect() as conn:
        if not cut.hold(conn.connection.driver_connection):
            raise TimeoutError  # given up while connecting
        try:
            with app.state.sessions(bind=conn) as session, session.begin():
                with db.all_waits_limited(session.connection(), _left(ends)):
                    result: T = call(session)
                if _left(ends) <= 0:
                    raise TimeoutError  # rolled back: too late for the answer it was for
            return result
        finally:
            if cut.let_go():
                conn.invalidate()  # cut mid-use: unusable (PostgreSQL), never pooled again


def _left(ends: float) -> float:
    """Seconds the database may take: until a moment before the deadline."""
    return ends - MARGIN_SECONDS - time.monotonic()
