"""A loop turn's rate-limit takes with their VINs' records (portal/gathered_takes.py): on
PostgreSQL one statement for the turn, on SQLite one transaction, and on both every request gets
exactly what it would have got alone — its own take, its own records, its own refusal, and
its own 503 at its own deadline."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from olv import db
from portal.errors import ApiError
from portal.ratelimit import Bucket, SharedLimits, Taken
from portal.state_reads import RecordsAlong, StateReader
from tests.helpers import loopback
from tests.helpers.portal import load_bob, with_limits

NAIC = "12345"
VIN_A, VIN_B = "1HGCM82633A004352", "2FTRX18W1XCA01234"
VIN_NONE = "3VWFE21C04M000001"


def along(vin: str) -> RecordsAlong:
    return RecordsAlong(vin, time.monotonic() + 5.0)


@pytest.fixture
def with_records(db_url: str, tmp_path: Path) -> str:
    engine = db.make_engine(db_url)
    try:
        load_bob(engine, tmp_path, [(NAIC, "P-A", VIN_A), (NAIC, "P-B", VIN_B)])
    finally:
        engine.dispose()
    return db_url


def test_a_turns_takes_share_one_statement_and_each_gets_its_own(with_records: str) -> None:
    bucket = Bucket(per_minute=600)  # capacity 100
    keys = [f"t-{uuid.uuid4().hex}" for _ in range(3)]
    alongs = [along(VIN_A), along(VIN_B), along(VIN_NONE)]

    async def work(limits: SharedLimits, statements: list[int]) -> list[Taken]:
        return await asyncio.gather(
            *(limits.take(bucket, k, 1, 5.0, a) for k, a in zip(keys, alongs, strict=True))
        )

    taken = asyncio.run(with_limits(with_records, work))
    assert [(t.wait, t.left) for t in taken] == [(0.0, 99)] * 3
    assert [[r["vin"] for r in a.records or []] for a in alongs] == [[VIN_A], [VIN_B], []]
    assert [r["policy_number"] for r in alongs[0].records or []] == ["P-A"]


def test_a_turn_is_one_statement_or_one_transaction(with_records: str) -> None:
    bucket = Bucket(per_minute=600)

    async def work(limits: SharedLimits, statements: list[int]) -> list[int]:
        keys = [f"t-{uuid.uuid4().hex}" for _ in range(5)]
        await asyncio.gather(*(limits.take(bucket, k, 1, 5.0, along(VIN_A)) for k in keys))
        await limits.take(bucket, keys[0], 1, 5.0, along(VIN_B))  # a later turn: its own
        return statements

    assert asyncio.run(with_limits(with_records, work)) == [5, 1]


def test_a_key_asked_twice_in_a_turn_is_taken_twice_and_then_refused(with_records: str) -> None:
    bucket = Bucket(per_minute=120, burst_seconds=1.0)  # 2 a second, capacity 2
    key = f"t-{uuid.uuid4().hex}"

    async def work(limits: SharedLimits, statements: list[int]) -> tuple[list[Taken], list[int]]:
        taken = await asyncio.gather(
            *(limits.take(bucket, key, 1, 5.0, along(VIN_A)) for _ in "abc")
        )
        return list(taken), statements

    taken, statements = asyncio.run(with_limits(with_records, work))
    assert sorted(t.left for t in taken if t.wait == 0) == [0, 1]
    (refused,) = [t for t in taken if t.wait > 0]
    assert 0 < refused.wait <= 0.5
    # PostgreSQL: a statement per take of the same key; SQLite: one after the other, together.
    assert statements == ([3] if with_records.startswith("sqlite") else [1, 1, 1])
    engine = db.make_engine(with_records)
    try:
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT tokens FROM portal_rate WHERE key = :k"), {"k": key}
            ).scalar_one()
    finally:
        engine.dispose()
    assert 0 <= left < 0.5  # two taken, none twice, the refusal wrote nothing


def test_a_hung_statement_answers_each_request_at_its_own_deadline(with_records: str) -> None:
    """Another transaction holds what the turn's takes must write (PostgreSQL: one key's row;
    SQLite: the write lock): the turn's statement waits, with another key's take in it too.
    Each gets its 503 at its own deadline, the statement ends by the later one, and the
    reader stays usable."""
    bucket = Bucket(per_minute=600)
    locked, other = f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    engine = db.make_engine(with_records)
    holder = engine.connect()
    if with_records.startswith("sqlite"):
        holder.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        holder.execute(
            text("INSERT INTO portal_rate (key, tokens, updated_at) VALUES (:k, 5, :now)"),
            {"k": locked, "now": time.time()},
        )
        holder.commit()
        holder.execute(text("SELECT 1 FROM portal_rate WHERE key = :k FOR UPDATE"), {"k": locked})

    async def timed(limits: SharedLimits, key: str, seconds: float) -> tuple[float, object]:
        started = time.monotonic()
        try:
            result: object = await limits.take(bucket, key, 1, seconds, along(VIN_A))
        except ApiError as exc:
            result = exc
        return time.monotonic() - started, result

    unhandled: list[dict[str, Any]] = []

    async def work(limits: SharedLimits, statements: list[int]) -> tuple[Any, ...]:
        asyncio.get_running_loop().set_exception_handler(lambda _, seen: unhandled.append(seen))
        answers = await asyncio.gather(timed(limits, locked, 0.3), timed(limits, other, 1.0))
        holder.rollback()  # the lock goes; a new take is answered at once
        after = await timed(limits, f"t-{uuid.uuid4().hex}", 5.0)
        return answers, after, list(statements)

    try:
        (first, second), after, statements = asyncio.run(with_limits(with_records, work))
        gc.collect()  # a task whose failure nobody saw says so when it is collected
    finally:
        holder.close()
        engine.dispose()
    assert statements[0] == 2  # both takes were in the one statement that hung
    for (waited, result), deadline in ((first, 0.3), (second, 1.0)):
        assert isinstance(result, ApiError) and result.status == 503, result
        assert deadline - 0.05 <= waited < deadline + 0.5, (deadline, waited)
    waited, result = after
    assert isinstance(result, Taken) and result.wait == 0 and waited < 1.0, after
    assert not unhandled, "each request was answered: the turn's timeout is no error of its own"


def test_sqlite_a_hop_still_queued_at_its_deadline_takes_nothing(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """SQLite's takes run on one thread, one hop after another. While a hop waits for the
    write lock, a later turn's hop waits in the queue; if its deadline passes there, its
    request has had its 503, and the hop must not take the token afterwards."""
    url = loopback.copied_database(sqlite_template, tmp_path)
    bucket = Bucket(per_minute=600)
    first, queued = f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    engine = db.make_engine(url)
    holder = engine.connect()
    holder.exec_driver_sql("BEGIN IMMEDIATE")

    async def refused(limits: SharedLimits, key: str, seconds: float) -> int:
        try:
            await limits.take(bucket, key, 1, seconds, along(VIN_A))
        except ApiError as exc:
            return exc.status
        return 200

    async def work(limits: SharedLimits, statements: list[int]) -> tuple[int, int]:
        waiting = asyncio.ensure_future(refused(limits, first, 3.0))
        await asyncio.sleep(0.05)  # the first hop is on the thread, waiting for the lock
        behind = asyncio.ensure_future(refused(limits, queued, 0.3))
        await asyncio.sleep(0.9)
        holder.rollback()  # the lock goes long before the first hop would give up
        return await waiting, await behind

    try:
        statuses = asyncio.run(with_limits(url, work))
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT key FROM portal_rate WHERE key IN (:a, :b)"),
                {"a": first, "b": queued},
            ).scalars()
            taken = set(rows)
    finally:
        holder.close()
        engine.dispose()
    assert statuses == (200, 503)
    assert taken == {first}  # the queued hop ran after its 503: it must have taken nothing


def test_sqlite_a_turn_runs_on_the_loop_unless_a_writer_of_this_process_holds_the_file(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """No thread hand-off when the write can start at once (olv/sqlite_inline.py); while
    another thread of the process writes (the query log), the turn waits its turn on the
    reader's thread for takes instead, the loop free meanwhile, and is answered."""
    url = loopback.copied_database(sqlite_template, tmp_path)
    bucket = Bucket(per_minute=600)
    engine = db.make_engine(url)
    lock = db.sqlite_write_lock(engine)
    assert lock is not None
    reader = StateReader(engine, 5.0)
    limits = SharedLimits(reader)

    def takers() -> int:
        return len(reader._takes._threads)  # the reader's thread for takes, once started

    async def work() -> tuple[int, Taken, int, Taken, int]:
        free = await limits.take(bucket, f"t-{uuid.uuid4().hex}", 1, 5.0, along(VIN_A))
        threads_when_free = takers()
        held = threading.Event()

        def writer_elsewhere() -> None:
            with lock:
                held.set()
                time.sleep(0.3)

        other = threading.Thread(target=writer_elsewhere)
        other.start()
        held.wait(5.0)
        ticks = 0
        waiting = asyncio.ensure_future(
            limits.take(bucket, f"t-{uuid.uuid4().hex}", 1, 5.0, along(VIN_A))
        )
        while not waiting.done():
            ticks += 1  # the loop keeps turning while the take waits
            await asyncio.sleep(0.01)
        other.join()
        return threads_when_free, free, takers(), await waiting, ticks

    try:
        threads_when_free, free, threads_when_held, behind, ticks = asyncio.run(work())
    finally:
        asyncio.run(reader.close())
        engine.dispose()
    assert threads_when_free == 0 and free.wait == 0
    assert threads_when_held == 1 and behind.wait == 0
    assert ticks >= 10
