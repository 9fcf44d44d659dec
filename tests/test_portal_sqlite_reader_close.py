"""On SQLite each reader thread keeps its own connection (portal/state_reads.py). Closing the
reader while a statement runs on one of them must leave that connection to its statement: a
connection closed under a running statement frees what the statement is still reading, which
crashed a test worker once. The thread closes it when the statement ends."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from olv import db
from portal.errors import ApiError
from portal.state_reads import StateReader

ROWS = 2_000_000
SLOW = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :rows) "
    "SELECT count(*) FROM n"
)


def test_closing_leaves_a_running_statement_its_connection(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    started = threading.Event()

    async def scenario() -> None:
        reader = StateReader(engine, 5.0)
        await reader.open()

        taken = reader._thread_connection

        def taking() -> object:
            conn = taken()
            started.set()  # the statement's connection is the thread's from here on
            return conn

        reader._thread_connection = taking  # type: ignore[method-assign]

        def slow() -> object:
            return reader._execute_sync(SLOW, {"rows": ROWS}, 30.0)

        running = asyncio.ensure_future(reader.in_thread(slow))
        assert await asyncio.to_thread(started.wait, 10.0)
        await reader.close()
        assert not running.done(), "the statement should outlast close(); make it longer"
        assert await running == [(ROWS,)]
        assert not reader._owned, "the thread closes its connection once the statement ends"
        with pytest.raises(ApiError) as refused:
            await reader.execute("SELECT 1", {}, 1.0)
        assert refused.value.status == 503

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()
