"""A rate limit's takes rewrite its one row in place (migration 0014): on PostgreSQL the table
and its key index stay a page or two however many takes a key has had, with autovacuum off,
as it is on some servers. Before, each take left a dead row and two index entries behind,
and each later take of the key walked them all.

The takes run on a private server: a transaction open anywhere on a server (another test's,
in another database) keeps every dead row, and the pages could not be pruned."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy import inspect, text

from olv import db
from portal.ratelimit import Bucket, SharedLimits
from portal.state_reads import RecordsAlong
from tests.helpers.portal import with_limits
from tests.helpers.private_pg import private_postgres

VIN = "1HGCM82633A004352"
TAKES = 3000
PAGE = 8192


async def _takes(limits: SharedLimits, keys: list[str]) -> int:
    """:data:`TAKES` takes from ``keys`` (one each per loop turn), as verifications take them;
    how many were granted."""
    bucket = Bucket(per_minute=10_000_000)
    taken = 0
    for _ in range(TAKES // len(keys)):
        answers = await asyncio.gather(
            *(
                limits.take(bucket, key, 1, 5.0, RecordsAlong(VIN, time.monotonic() + 5.0))
                for key in keys
            )
        )
        taken += sum(1 for a in answers if a.wait == 0)
    return taken


def test_a_keys_takes_leave_the_table_and_its_index_a_page_or_two() -> None:
    with private_postgres({"autovacuum": "off"}) as pg:
        db.upgrade(pg.url)
        keys = [f"t-{uuid.uuid4().hex}" for _ in range(4)]
        assert asyncio.run(with_limits(pg.url, lambda limits, _: _takes(limits, keys))) == TAKES
        engine = db.make_engine(pg.url)
        try:
            with engine.connect() as conn:
                table, index = (
                    conn.execute(text(f"SELECT pg_relation_size('{name}')")).scalar_one()
                    for name in ("portal_rate", "pk_portal_rate")
                )
        finally:
            engine.dispose()
    # A row rewritten off its page each take: some 11 pages of table by now, and more index.
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
