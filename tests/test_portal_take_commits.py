"""The rate limits' takes commit without waiting for PostgreSQL's disk flush, and the
portal's prepared reads and takes are planned once (portal/state_reads.py): only on the
portal's own pool for them, never on the engine's other connections, and never through a
transaction pooler, which refuses a connection's own settings."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from olv import db, libpq
from portal.state_reads import StateReader, _with_session_settings

DIRECT = "postgresql+psycopg://olv@db.example/state"
POOLED = f"{DIRECT}?{libpq.POOL_MODE}=transaction"


def test_the_takes_pool_commits_unflushed_and_the_engine_does_not(pg_database: str) -> None:
    engine = db.make_engine(pg_database)
    reader = StateReader(engine, 5.0)

    async def takes_settings() -> list[tuple[object, ...]]:
        await reader.open()
        try:
            return [
                tuple(row)
                for show in ("SHOW synchronous_commit", "SHOW plan_cache_mode")
                for row in await reader.rows_on_primary(show, {})
            ]
        finally:
            await reader.close()

    try:
        assert asyncio.run(takes_settings()) == [("off",), ("force_generic_plan",)]
        with engine.connect() as conn:  # every other write of the portal: durable as ever
            assert conn.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
            assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"
    finally:
        engine.dispose()


def test_the_url_s_own_options_are_kept() -> None:
    given = "host=db.example user=olv options='-c search_path=olv'"
    changed = _with_session_settings(given, DIRECT)
    assert (
        "options='-c search_path=olv -c synchronous_commit=off"
        " -c plan_cache_mode=force_generic_plan'" in changed
    ), changed


def test_through_a_transaction_pooler_the_connection_is_left_as_it_is() -> None:
    given = "host=db.example user=olv"
    assert _with_session_settings(given, POOLED) == given
