"""The deadline gate on a starved machine: a worker that is busy or descheduled is no hung
database (``service.db_deadline``, the watchdog's cut).

The gate runs here in this process, on a real store over real SQLite and PostgreSQL, with a
real event loop. An inline call that runs on the CPU, or whose whole process is stopped by a
sibling (as a loaded machine deschedules it, only longer), well past ``INLINE_LIMIT`` must not
be cut: it answers on the loop's own thread, with the real policy, and nothing is logged. A
stopped PostgreSQL must still be cut and the call given up at its deadline. After a spell on
the pool threads the gate comes back to inline calls, also when the pool's answers are slow
because its thread is busy on the CPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from olv import db, normalize
from service.coverage import PolicyView, StoreUnavailable
from service.db_deadline import INLINE_LIMIT, DeadlineGate
from service.store import SqlPolicyStore
from tests.helpers import data
from tests.helpers.private_pg import private_postgres

CUT = "cut, asked on a thread"
DEADLINE = 1.5  # seconds: what each call is given here
MARGIN = 1.0  # the deadline test's allowance for a busy 2-core machine (see its module)
_INLINE_WITHIN = 10.0  # seconds the gate may take to open its inline connection


@pytest.fixture
def policies_url(db_url: str, tmp_path: Path) -> str:
    data.load_policies(db_url, tmp_path)
    return db_url


@contextmanager
def _gate(url: str) -> Iterator[tuple[SqlPolicyStore, DeadlineGate]]:
    engine = db.make_engine(url, wait_seconds=DEADLINE)
    store = SqlPolicyStore(engine)
    gate = DeadlineGate(store)
    try:
        yield store, gate
    finally:
        gate.close()
        store.close()
        engine.dispose()


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def _read(store: SqlPolicyStore) -> Callable[[], tuple[int, PolicyView | None]]:
    """The thread a call ran on, and the policy it found."""
    return lambda: (
        threading.get_ident(),
        store.find_policy(data.NAIC, normalize.policy_key("P-OK")),
    )


async def _inline(gate: DeadlineGate, store: SqlPolicyStore) -> None:
    """Until calls run inline, on this (the loop's) thread: the gate opens that connection
    in the background after the first call."""
    end = time.monotonic() + _INLINE_WITHIN
    while True:
        thread, policy = await gate.acall(_read(store), time.monotonic() + DEADLINE)
        assert policy is not None
        if thread == threading.get_ident():
            return
        assert time.monotonic() < end, "calls never ran inline"
        await asyncio.sleep(0.05)


def _burn(seconds: float) -> None:
    """Busy on the CPU, running or waiting for one, for ``seconds`` of wall time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _assert_not_cut(caplog: pytest.LogCaptureFixture, answer: tuple[int, PolicyView | None]):
    thread, policy = answer
    assert CUT not in caplog.text
    assert thread == threading.get_ident()  # answered inline: a cut asks again on a pool thread
    assert policy is not None and policy.periods  # the real policy, not a failure


def test_inline_call_busy_on_the_cpu_is_not_cut(
    policies_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.db_deadline")

    async def scenario(store: SqlPolicyStore, gate: DeadlineGate) -> None:
        await _inline(gate, store)
        conn = store.connection_of(threading.get_ident())
        read = _read(store)

        def busy() -> tuple[int, PolicyView | None]:
            read()
            _burn(8 * INLINE_LIMIT)
            return read()

        answer = await gate.acall(busy, time.monotonic() + DEADLINE)
        _assert_not_cut(caplog, answer)
        assert store.connection_of(threading.get_ident()) is conn  # not cut, not reopened

    with _gate(policies_url) as (store, gate):
        _run(scenario(store, gate))


def test_inline_call_of_a_stopped_worker_is_not_cut(
    policies_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sibling process stops this one (every thread, the watchdog's too) in the middle of an
    inline call, then lets it go on: a descheduled worker, in the extreme."""
    caplog.set_level(logging.WARNING, logger="service.db_deadline")
    stopped_for = 6 * INLINE_LIMIT

    async def scenario(store: SqlPolicyStore, gate: DeadlineGate) -> None:
        await _inline(gate, store)
        read = _read(store)

        def stopped() -> tuple[int, PolicyView | None]:
            read()
            script = f"kill -STOP {os.getpid()}; sleep {stopped_for}; kill -CONT {os.getpid()}"
            # The SIGCONT says the stop has come and gone: on an idle machine the sibling can
            # stop this process before Popen has even returned, so a gap in the clock seen from
            # the loop below would miss it.
            continued = threading.Event()
            previous = signal.signal(signal.SIGCONT, lambda *_: continued.set())
            try:
                with subprocess.Popen(["sh", "-c", script]):
                    end = time.monotonic() + 60.0
                    while not continued.is_set():  # running, never blocked, meanwhile
                        assert time.monotonic() < end, "the sibling never stopped this process"
                    _burn(INLINE_LIMIT)  # the watchdog woke meanwhile, late: it must not cut
                    return read()
            finally:
                signal.signal(signal.SIGCONT, previous)

        _assert_not_cut(caplog, await gate.acall(stopped, time.monotonic() + DEADLINE))

    with _gate(policies_url) as (store, gate):
        _run(scenario(store, gate))


def test_stopped_postgresql_is_still_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="service.db_deadline")
    with private_postgres() as pg:
        db.upgrade(pg.url)
        data.load_policies(pg.url, tmp_path)

        async def scenario(store: SqlPolicyStore, gate: DeadlineGate) -> None:
            await _inline(gate, store)
            pg.stop_all()
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await gate.acall(_read(store), started + DEADLINE)
                elapsed = time.monotonic() - started
            finally:
                pg.continue_all()
            assert elapsed <= DEADLINE + MARGIN
            assert CUT in caplog.text  # the inline call was cut, not waited for

        with _gate(pg.url) as (store, gate):
            _run(scenario(store, gate))


@pytest.mark.parametrize("pool_answers", ["busy on the CPU", "blocked"])
def test_back_to_inline_calls_after_a_spell_on_the_pool(
    policies_url: str, pool_answers: str
) -> None:
    """The inline call fails (the policy table is away a moment): the calls go to the pool
    threads. There each answer comes late, its thread busy on the CPU (a starved machine) or
    blocked (a slow database); the gate must still come back to inline calls: at once after
    an answer that was blocked briefly, after a while otherwise."""

    async def scenario(store: SqlPolicyStore, gate: DeadlineGate) -> None:
        await _inline(gate, store)
        loop_thread = threading.get_ident()
        read = _read(store)

        def slow_on_pool() -> tuple[int, PolicyView | None]:
            if threading.get_ident() != loop_thread:
                if pool_answers == "blocked":
                    time.sleep(INLINE_LIMIT)
                else:
                    _burn(2 * INLINE_LIMIT)
            try:
                return read()
            except StoreUnavailable:  # as the decision answers SYSU
                return threading.get_ident(), None

        with _policy_table_away(policies_url):
            thread, policy = await gate.acall(slow_on_pool, time.monotonic() + DEADLINE)
        assert policy is None and thread != loop_thread  # failed inline, asked on the pool
        end = time.monotonic() + _INLINE_WITHIN
        on_pool = 0
        while True:
            thread, policy = await gate.acall(slow_on_pool, time.monotonic() + DEADLINE)
            assert policy is not None and policy.periods
            if thread == loop_thread:
                break
            on_pool += 1
            assert time.monotonic() < end, f"pinned to the pool threads ({on_pool} calls)"
        assert on_pool > 0  # the failed inline call did send the calls to the pool

    with _gate(policies_url) as (store, gate):
        _run(scenario(store, gate))


@contextmanager
def _policy_table_away(url: str) -> Iterator[None]:
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE policy RENAME TO policy_away")
        yield
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE policy_away RENAME TO policy")
        engine.dispose()
