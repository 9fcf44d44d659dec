"""The insurer registry's cache in the portal (portal.routing): the requests that find it
missing share one read, it is re-read in the background before it runs out, and a read that
fails or hangs leaves the next request free to read again. Real databases; the registry read
is counted and slowed where it is called, the read itself is the portal's."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from olv import db
from olv.config import Settings
from portal.errors import ApiError
from portal.insurer_client import InsurerClient, InsurerConfig, MemoryTransport, Reply
from portal.querylog import QueryLogWriter
from portal.routing import REGISTRY_REFRESH_AT, Router
from portal.settings import PortalSettings
from tests.helpers.portal import add_insurer

LIFE = 3.0  # seconds the test's registry cache lasts: due from 2.4 s, gone at 3 s
BUDGET = 1.0  # the request budget, seconds
Registry = dict[str, InsurerConfig]


async def _no_insurer(insurer: InsurerConfig, body: bytes) -> Reply:
    raise AssertionError("no insurer is asked in these tests")


class Reads:
    """The router's registry reads, counted; each can be made to wait on a gate first."""

    def __init__(self, router: Router) -> None:
        self.count = 0
        self.delay = 0.0
        self.gate: threading.Event | None = None
        self.fail = False
        self._real: Callable[[], Registry] = router._load_registry
        router._load_registry = self._read  # type: ignore[method-assign]

    def _read(self) -> Registry:
        self.count += 1
        gate, self.gate = self.gate, None
        if gate is not None:
            assert gate.wait(30)
            return {}  # what a read that hung would find: told apart from the real one
        time.sleep(self.delay)
        if self.fail:
            self.fail = False
            raise OperationalError("SELECT", {}, Exception("the server closed the connection"))
        return self._real()


@asynccontextmanager
async def _router(db_url: str) -> AsyncIterator[tuple[Router, Reads]]:
    engine = db.make_engine(db_url)
    portal = PortalSettings(budget_seconds=BUDGET)
    router = Router(
        engine,
        InsurerClient(MemoryTransport(_no_insurer), portal),
        QueryLogWriter(engine),
        Settings(database_url=db_url),
        portal,
        registry_seconds=LIFE,
    )
    await router.open()
    try:
        yield router, Reads(router)
    finally:
        await router.close()
        engine.dispose()


def _deadline() -> float:
    return time.monotonic() + BUDGET


def _read_ended(router: Router) -> bool:
    under_way = router._registry_read
    return under_way is not None and under_way[1].done()


async def _until(done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for a background read to end (a loaded machine may take its time)."""
    ends = time.monotonic() + seconds
    while not done() and time.monotonic() < ends:
        await asyncio.sleep(0.02)


@pytest.fixture
def with_insurer(db_url: str) -> str:
    engine = db.make_engine(db_url)
    add_insurer(engine, "10001", "http://a.invalid/iicmva/00200809")
    engine.dispose()
    return db_url


def test_the_requests_that_find_it_missing_share_one_read(with_insurer: str) -> None:
    async def scenario() -> None:
        async with _router(with_insurer) as (router, reads):
            reads.delay = 0.2  # a slow database: every request arrives during the read
            found = await asyncio.gather(*(router._registry(_deadline()) for _ in range(20)))
            assert reads.count == 1
            assert all(set(registry) == {"10001"} for registry in found)

    asyncio.run(scenario())


def test_it_is_read_again_in_the_background_before_it_runs_out(with_insurer: str) -> None:
    async def scenario() -> None:
        async with _router(with_insurer) as (router, reads):
            assert set(await router._registry(_deadline())) == {"10001"}
            engine = db.make_engine(with_insurer)
            add_insurer(engine, "20002", "http://b.invalid/iicmva/00200809")  # a change
            engine.dispose()
            await asyncio.sleep(LIFE * REGISTRY_REFRESH_AT + 0.1)  # due, not yet run out
            reads.delay = 1.0
            started = time.monotonic()
            for _ in range(10):  # requests go on with what is cached, without waiting
                assert set(await router._registry(_deadline())) == {"10001"}
            assert time.monotonic() - started < reads.delay / 2
            await _until(lambda: "20002" in (router.registry_cache.get("enabled") or {}))
            assert reads.count == 2
            assert set(await router._registry(_deadline())) == {"10001", "20002"}
            assert reads.count == 2

    asyncio.run(scenario())


def test_a_failed_read_answers_503_and_the_next_request_reads_again(with_insurer: str) -> None:
    async def scenario() -> None:
        async with _router(with_insurer) as (router, reads):
            reads.fail = True
            with pytest.raises(ApiError) as failed:
                await router._registry(_deadline())
            assert failed.value.status == 503
            assert set(await router._registry(_deadline())) == {"10001"}
            assert reads.count == 2
            # The same in the background: a due re-read that fails is tried again by the
            # next request that finds the cache due, and requests meanwhile keep the cache.
            await asyncio.sleep(LIFE * REGISTRY_REFRESH_AT + 0.1)
            reads.fail = True
            assert set(await router._registry(_deadline())) == {"10001"}
            await _until(lambda: _read_ended(router))
            assert reads.count == 3
            assert set(await router._registry(_deadline())) == {"10001"}
            await _until(lambda: reads.count == 4 and _read_ended(router))
            assert reads.count == 4  # tried again, and this one stored a fresh registry
            assert set(await router._registry(_deadline())) == {"10001"}
            assert reads.count == 4

    asyncio.run(scenario())


def test_a_read_that_hangs_holds_up_requests_for_one_budget_only(with_insurer: str) -> None:
    async def scenario() -> None:
        async with _router(with_insurer) as (router, reads):
            hung = reads.gate = threading.Event()
            started = time.monotonic()
            waiting = [router._registry(_deadline()) for _ in range(3)]
            outcomes: list[Any] = await asyncio.gather(*waiting, return_exceptions=True)
            assert [getattr(o, "status", o) for o in outcomes] == [503, 503, 503]
            assert BUDGET * 0.9 < time.monotonic() - started < BUDGET * 2.5
            assert reads.count == 1  # the three waited on the one read
            # Past a budget, the next request does not wait on the hung read: it reads anew.
            await asyncio.sleep(0.1)
            assert set(await router._registry(_deadline())) == {"10001"}
            assert reads.count == 2
            latest = router._registry_read
            hung.set()  # the hung read ends at last: what it found is not stored over newer
            await asyncio.sleep(0.3)
            assert latest is router._registry_read  # and no read started since
            assert set(await router._registry(_deadline())) == {"10001"}

    asyncio.run(scenario())
