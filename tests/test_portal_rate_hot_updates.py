"""A rate limit's takes rewrite its one row in place (migration 0014): on PostgreSQL the table
and its key index stay a page or two however many takes a key has had, with autovacuum off,
as it is on some servers. Before, each take left a dead row and two index entries behind,
and each later take of the key walked them all."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import inspect, text

from olv import db
from portal.ratelimit import Bucket, SharedLimits
from portal.state_reads import RecordsAlong, StateReader

VIN = "1HGCM82633A004352"
TAKES = 3000
PAGE = 8192


@pytest.fixture
def no_autovacuum(db_url: str) -> Iterator[str]:
    """The table's autovacuum off for the test, so that only in-page pruning can help."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite rewrites a row in place whatever its indexes; nothing to prune")
    engine = db.make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE portal_rate SET (autovacuum_enabled = false)"))
        yield db_url
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE portal_rate RESET (autovacuum_enabled)"))
    finally:
        engine.dispose()


def _sizes(url: str) -> tuple[int, int]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return (
                conn.execute(text("SELECT pg_relation_size('portal_rate')")).scalar_one(),
                conn.execute(text("SELECT pg_relation_size('pk_portal_rate')")).scalar_one(),
            )
    finally:
        engine.dispose()


def test_a_keys_takes_leave_the_table_and_its_index_a_page_or_two(no_autovacuum: str) -> None:
    bucket = Bucket(per_minute=10_000_000)
    keys = [f"t-{uuid.uuid4().hex}" for _ in range(4)]

    async def takes() -> int:
        engine = db.make_engine(no_autovacuum)
        reader = StateReader(engine, 5.0)
        await reader.open()
        limits = SharedLimits(reader)
        taken = 0
        try:
            for _ in range(TAKES // len(keys)):
                answers = await asyncio.gather(
                    *(
                        limits.take(bucket, key, 1, 5.0, RecordsAlong(VIN, time.monotonic() + 5.0))
                        for key in keys
                    )
                )
                taken += sum(1 for a in answers if a.wait == 0)
        finally:
            await reader.close()
            engine.dispose()
        return taken

    assert asyncio.run(takes()) == TAKES
    table, index = _sizes(no_autovacuum)
    # A row rewritten off its page each take: some 60 pages of table and 25 of index by now.
    assert table <= 2 * PAGE, f"portal_rate grew to {table // PAGE} pages"
    assert index <= 3 * PAGE, f"its key index grew to {index // PAGE} pages"


def test_only_the_key_is_indexed_and_pages_keep_room(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        assert [i["name"] for i in inspect(engine).get_indexes("portal_rate")] == []
        if db_url.startswith("postgresql"):
            with engine.connect() as conn:
                options = conn.execute(
                    text("SELECT reloptions FROM pg_class WHERE relname = 'portal_rate'")
                ).scalar_one()
            assert "fillfactor=50" in (options or [])
    finally:
        engine.dispose()
