"""A batch's read awaited on the event loop (PostgreSQL): the same answers as the blocking
read, the loop free meanwhile, and every way it can go wrong bounded as a blocking call is
(service.coalesce, SqlPolicyStore.read_batch_awaited). On a real PostgreSQL, reached through a
loopback proxy where the link must be slow or dead."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from olv import normalize
from olv.iicmva import V0809
from service.coalesce import AwaitedReads, Coalescer
from service.coverage import (
    BatchFound,
    BatchReads,
    Steps,
    StoreUnavailable,
    Window,
    decide,
    deciding,
)
from service.db_deadline import INLINE_LIMIT, DeadlineGate
from service.store import SqlPolicyStore
from tests.conftest import fresh_pg_database
from tests.helpers import data, loopback
from tests.helpers.faulty_network import HoldingProxy
from tests.helpers.soap import (
    Server,
    codes_of,
    envelope,
    post,
    request_xml,
    response_element,
    soap_server,
    today,
)
from tests.test_service_shared_reads import (
    CONCURRENT,
    ODD_KEYS,
    _answer_element,
    _mixed_queries,
    _policies_csv,
    _post_bytes,
    _read_answer,
    _written_while_stopped,
)

MARGIN = 1.0  # seconds a busy 2-core machine may add to a bounded wait


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with fresh_pg_database() as url:
        path = tmp_path / "policies.csv"
        path.write_text(_policies_csv())
        data.load_policy_file(url, path)
        yield url


def _reads() -> BatchReads:
    keys = [(data.NAIC, normalize.policy_key(key)) for key in [*ODD_KEYS, "P-OK", "NOPE"]]
    vins = [(data.NAIC, data.VIN_EXPIRED, "NOPE"), (data.NAIC, data.VIN_OK, "")]
    return BatchReads(keys, vins)


def _opened(store: SqlPolicyStore) -> BatchFound:
    """The blocking read's answer; it opens this thread's connection, which awaited reads use."""
    found = store.read_batch(_reads())
    assert store.awaits(), "a connection of this thread's own, to the primary, and no timeout"
    return found


def _proxied(url: str, port: int) -> str:
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


# --- the store's awaited read ----------------------------------------------------------------


def test_an_awaited_read_finds_what_the_blocking_read_finds(pg_url: str) -> None:
    with data.store_on(pg_url) as store:
        blocking = _opened(store)
        awaited = asyncio.run(store.read_batch_awaited(_reads(), time.monotonic() + 5))
        assert awaited == blocking
        stored = {(data.NAIC, normalize.policy_key(key)) for key in [*ODD_KEYS, "P-OK"]}
        assert set(awaited.policies) == stored
        assert (data.NAIC, "NOPE") not in awaited.policies
        assert (data.NAIC, data.VIN_EXPIRED) in awaited.periods  # the VIN of a key not found


def test_the_loop_runs_on_while_a_read_is_awaited(pg_url: str) -> None:
    proxy = HoldingProxy(("127.0.0.1", make_url(pg_url).port or 5432))
    try:
        with data.store_on(_proxied(pg_url, proxy.port)) as store:
            expected = _opened(store)
            proxy.delay = 0.15  # each way: a read takes at least 0.3 s

            async def scenario() -> tuple[BatchFound, int, float]:
                ticks = 0
                read = asyncio.ensure_future(
                    store.read_batch_awaited(_reads(), time.monotonic() + 5)
                )
                started = time.monotonic()
                while not read.done():
                    await asyncio.sleep(0.01)
                    ticks += 1
                return read.result(), ticks, time.monotonic() - started

            found, ticks, took = asyncio.run(scenario())
        assert found == expected
        assert took >= 0.3
        # Blocked on the read, the loop would have ticked once at most.
        assert ticks >= 5, f"the loop ticked {ticks} times in {took:.2f} s"
    finally:
        proxy.close()


def test_an_awaited_read_past_its_deadline_gives_up_in_time(pg_url: str) -> None:
    proxy = HoldingProxy(("127.0.0.1", make_url(pg_url).port or 5432))
    try:
        with data.store_on(_proxied(pg_url, proxy.port)) as store:
            expected = _opened(store)
            tid = threading.get_ident()
            proxy.hold()
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                asyncio.run(store.read_batch_awaited(_reads(), started + 0.3))
            assert time.monotonic() - started <= 0.3 + MARGIN
            # Its answer may still come: the connection is never read from again.
            assert store.connection_of(tid) is None and not store.awaits()
            proxy.release()
            assert store.read_batch(_reads()) == expected  # on a new connection
    finally:
        proxy.close()


def test_an_awaited_read_whose_backend_ends_fails_and_drops_its_connection(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with data.store_on(pg_url) as store:
        expected = _opened(store)
        tid = threading.get_ident()
        pid = store.connection_of(tid).driver_connection.info.backend_pid  # type: ignore[union-attr]
        admin = create_engine(pg_url)
        try:
            with admin.connect() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            admin.dispose()
        with caplog.at_level(logging.WARNING), pytest.raises(StoreUnavailable):
            asyncio.run(store.read_batch_awaited(_reads(), time.monotonic() + 5))
        assert store.connection_of(tid) is None
        assert "lost its database connection" in caplog.text
        assert store.read_batch(_reads()) == expected


def test_an_awaited_read_prepares_again_on_a_session_that_lost_its_statements(
    pg_url: str,
) -> None:
    with data.store_on(pg_url) as store:
        expected = _opened(store)
        driver = store.connection_of(threading.get_ident()).driver_connection  # type: ignore[union-attr]
        driver.execute("DEALLOCATE ALL")
        driver.execute("RESET plan_cache_mode")
        found = asyncio.run(store.read_batch_awaited(_reads(), time.monotonic() + 5))
        assert found == expected
        assert driver.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)


def test_a_cancelled_awaited_read_drops_its_connection(pg_url: str) -> None:
    proxy = HoldingProxy(("127.0.0.1", make_url(pg_url).port or 5432))
    try:
        with data.store_on(_proxied(pg_url, proxy.port)) as store:
            _opened(store)
            tid = threading.get_ident()
            proxy.hold()  # sent, never answered: the task is cancelled mid-read

            async def scenario() -> None:
                read = asyncio.ensure_future(
                    store.read_batch_awaited(_reads(), time.monotonic() + 5)
                )
                await asyncio.sleep(0.05)
                assert not read.done()
                read.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await read

            asyncio.run(scenario())
            assert store.connection_of(tid) is None
    finally:
        proxy.close()


# --- the coalescer's awaited way ---------------------------------------------------------------


def test_requests_decided_with_awaited_reads_get_each_its_own_answer(pg_url: str) -> None:
    window_today = today().date()
    requests = _mixed_queries()
    with data.store_on(pg_url) as store:
        _opened(store)
        window = Window(window_today, 183, 0)
        alone = [decide(q, store=store, authorized=a, window=window) for q, a in requests]
        awaited_reads: list[BatchReads] = []

        async def read(reads: BatchReads, due: float) -> BatchFound:
            awaited_reads.append(reads)
            return await store.read_batch_awaited(reads, due)

        def steps(batch: Sequence[tuple[object, bool]]) -> Steps:
            return deciding(batch, store=store, window=window)  # type: ignore[arg-type]

        def blocking(batch: Sequence[object]) -> list[object]:
            raise AssertionError("the batch went the blocking way")

        async def main() -> list[object]:
            gate = DeadlineGate(store)
            try:
                coalescer = Coalescer(
                    gate, blocking, lambda exc: exc, AwaitedReads(store.awaits, steps, read)
                )
                due = time.monotonic() + 5
                return list(await asyncio.gather(*(coalescer(r, due) for r in requests)))
            finally:
                gate.close()

        together = asyncio.run(main())
    assert together == alone
    assert len(awaited_reads) == 1, "one turn, one read"


class _SlowReads:
    """Awaited reads that answer only when told to (or give up at their deadline); the
    blocking way answers at once, on a pool thread."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.pool_threads: set[int] = set()

    async def read(self, reads: BatchReads, due: float) -> BatchFound:
        async with asyncio.timeout(due - time.monotonic()):
            await self.go.wait()
        return BatchFound({}, {})

    @staticmethod
    def steps(batch: Sequence[int]) -> Steps:
        yield BatchReads([], [])
        return [i * 10 for i in batch]  # type: ignore[misc]

    def run_many(self, batch: Sequence[int]) -> list[int]:
        self.pool_threads.add(threading.get_ident())
        return [i * 10 for i in batch]


def test_batches_behind_a_slow_awaited_read_go_to_the_pool(pg_url: str) -> None:
    with data.store_on(pg_url) as store:
        _opened(store)

        async def main() -> None:
            slow = _SlowReads()
            gate = DeadlineGate(store)
            try:
                coalescer: Coalescer[int, int] = Coalescer(
                    gate,
                    slow.run_many,
                    lambda exc: -1,
                    AwaitedReads(store.awaits, slow.steps, slow.read),
                )
                due = time.monotonic() + 5
                first = asyncio.gather(*(coalescer(i, due) for i in range(3)))
                await asyncio.sleep(INLINE_LIMIT * 2)  # the first batch's read is slow now
                second = await asyncio.wait_for(
                    asyncio.gather(*(coalescer(i, due) for i in range(3, 6))), 2.0
                )
                assert second == [30, 40, 50]
                assert slow.pool_threads and threading.get_ident() not in slow.pool_threads
                assert not first.done(), "the first batch still awaits its read"
                slow.go.set()
                assert await first == [0, 10, 20]
                third = await asyncio.gather(*(coalescer(i, due) for i in range(6, 8)))
                assert third == [60, 70]
            finally:
                gate.close()

        asyncio.run(main())


def test_an_awaited_read_that_outlives_its_batch_opens_the_breaker(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with data.store_on(pg_url) as store:
        _opened(store)
        failures: list[Exception] = []

        def failed(exc: Exception) -> int:
            failures.append(exc)
            return -1

        async def main() -> None:
            slow = _SlowReads()  # never told to answer: a hung database
            gate = DeadlineGate(store)
            try:
                coalescer: Coalescer[int, int] = Coalescer(
                    gate, slow.run_many, failed, AwaitedReads(store.awaits, slow.steps, slow.read)
                )
                started = time.monotonic()
                answers = await asyncio.gather(*(coalescer(i, started + 0.3) for i in range(4)))
                assert answers == [-1] * 4
                assert time.monotonic() - started <= 0.3 + MARGIN
                # The breaker is open: the next request is answered at once, unasked.
                asked = time.monotonic()
                assert await coalescer(9, asked + 5) == -1
                assert time.monotonic() - asked < MARGIN  # not its 5 s
                assert not slow.pool_threads
            finally:
                gate.close()

        with caplog.at_level(logging.ERROR):
            asyncio.run(main())
    assert "outlived its request" in caplog.text
    assert all(isinstance(f, StoreUnavailable) for f in failures)


# --- through a server, the database a slow link away ------------------------------------------


def test_bursts_through_a_slow_link_are_answered_each_as_alone(pg_url: str, tmp_path: Path) -> None:
    """The database 0.1 s away (0.05 s each way). A first burst of requests is one batch,
    its read awaited for longer than INLINE_LIMIT; a second burst arrives meanwhile and goes
    to the database threads, whose connections open through the same link. Every request
    still gets its own answer, none SYSU, and no read outlives its request."""
    proxy = HoldingProxy(("127.0.0.1", make_url(pg_url).port or 5432))
    try:
        env = {"OLV_DATABASE_URL": _proxied(pg_url, proxy.port)}
        with soap_server(env, tmp_path) as server:
            for _ in range(3):  # the worker's own connection opened and its statement prepared
                assert _ask_once(server) == []
            proxy.delay = 0.05
            cases = CONCURRENT * 4
            first = [loopback.connect(server.url("")) for _ in cases]
            second = [loopback.connect(server.url("")) for _ in cases]
            try:
                messages = [
                    _post_bytes(f"/iicmva/{V0809}", request_xml(V0809, **o))  # type: ignore[arg-type]
                    for o, _ in cases
                ]
                _written_while_stopped(server.process.pid, first, messages)
                time.sleep(0.02)  # the first burst's read is on its way
                for sock, message in zip(second, messages, strict=True):
                    sock.sendall(message)
                answers = [_read_answer(sock) for sock in first + second]
            finally:
                for sock in first + second:
                    sock.close()
            log_text = server.log.read_text()
        for (overrides, expected), (status, body) in zip(cases * 2, answers, strict=True):
            assert status == 200, body
            assert codes_of(_answer_element(body))[1] == expected, overrides
        assert "outlived its request" not in log_text
    finally:
        proxy.close()


def _ask_once(server: Server) -> list[str]:
    resp = post(server.url(f"/iicmva/{V0809}"), envelope(request_xml(V0809)))
    assert resp.status_code == 200, resp.text
    return codes_of(response_element(resp))[1]
