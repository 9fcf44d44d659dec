"""The query-log writer (portal/querylog.py) when the database refuses a row, cannot be reached,
or stays away for long: nothing good is lost, nothing bad blocks the log, memory stays bounded."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from olv import db
from portal import querylog
from portal.models import InsurerCall, QueryLog
from portal.querylog import QueryLogWriter
from tests.helpers import loopback

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def query(letter: str) -> dict[str, Any]:
    return {
        "id": letter * 32,
        "at": NOW,
        "username": "officer1",
        "role": "officer",
        "channel": "api",
        "http_status": 200,
        "reason_codes": "",
        "latency_ms": 1.0,
    }


def call(letter: str) -> dict[str, Any]:
    return {
        "at": NOW,
        "naic": "10001",
        "outcome": "answered",
        "response_code": "Confirmed",
        "latency_ms": 1.0,
        "query_id": letter * 32,
    }


def stored(url: str) -> tuple[list[str], int]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            ids = list(conn.scalars(select(QueryLog.id).order_by(QueryLog.id)))
            calls = conn.scalar(select(func.count()).select_from(InsurerCall)) or 0
        return [i[0] for i in ids], calls
    finally:
        engine.dispose()


def test_a_row_the_database_refuses_is_set_aside_and_the_rest_written(db_url: str) -> None:
    engine = db.make_engine(db_url)
    writer = QueryLogWriter(engine)

    async def scenario() -> None:
        writer.add(query("a"), [call("a")])
        await writer.flush()
        writer.add(query("b"), [call("b")])
        writer.add(query("a"), [call("a")])  # the same id again: a primary-key violation
        writer.add(query("c"), [call("c"), call("c")])
        await writer.flush()
        await writer.flush()  # nothing waits: the refused row does not come back

    asyncio.run(scenario())
    engine.dispose()
    assert writer.set_aside == 1
    assert stored(db_url) == (["a", "b", "c"], 4)


def test_rows_wait_while_the_database_cannot_be_reached(db_url: str, tmp_path: Path) -> None:
    away = db.make_engine(f"sqlite:///{tmp_path / 'no such folder' / 'olv.db'}")
    writer = QueryLogWriter(away)

    async def scenario() -> None:
        writer.add(query("a"), [call("a")])
        writer.add(query("b"), [])
        for _ in range(2):
            with pytest.raises(Exception, match="unable to open"):
                await writer.flush()
        writer.engine = db.make_engine(db_url)  # the database is back
        writer.add(query("c"), [call("c")])
        await writer.flush()
        writer.engine.dispose()

    asyncio.run(scenario())
    assert writer.set_aside == 0
    assert stored(db_url) == (["a", "b", "c"], 2)


def test_a_long_outage_keeps_at_most_the_cap(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(querylog, "MAX_WAITING_QUERIES", 3)
    writer = QueryLogWriter(db.make_engine(f"sqlite:///{tmp_path / 'none' / 'olv.db'}"))
    for letter in "abcde":
        writer.add(query(letter), [call(letter)])
    assert writer.dropped == 2
    assert [q["id"][0] for q in writer._queries] == ["a", "b", "c"]


def test_a_read_does_not_fail_because_the_log_cannot_be_written(tmp_path: Path) -> None:
    writer = QueryLogWriter(db.make_engine(f"sqlite:///{tmp_path / 'none' / 'olv.db'}"))
    writer.add(query("a"), [])

    async def read() -> None:
        await writer.settle(1.0)  # logs, does not raise

    asyncio.run(read())
    assert len(writer._queries) == 1  # still waiting for the database


def _threads_asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the writer hands to a thread, as it does."""
    asked: list[str] = []
    to_thread = asyncio.to_thread

    async def counted(fn: Any, *args: Any) -> Any:
        asked.append(getattr(fn, "__name__", repr(fn)))
        return await to_thread(fn, *args)

    monkeypatch.setattr(querylog.asyncio, "to_thread", counted)
    return asked


@pytest.fixture
def on_sqlite(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, QueryLogWriter, list[str]]]:
    """A writer on a fresh SQLite state database, and what it hands to a thread."""
    url = loopback.copied_database(sqlite_template, tmp_path)
    asked = _threads_asked(monkeypatch)
    engine = db.make_engine(url)
    yield url, QueryLogWriter(engine), asked
    engine.dispose()


def test_sqlite_a_rounds_rows_are_written_on_the_loop_and_a_backlog_on_a_thread(
    on_sqlite: tuple[str, QueryLogWriter, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, writer, asked = on_sqlite
    monkeypatch.setattr(querylog, "INLINE_ROWS", 4)

    async def scenario() -> None:
        writer.add(query("a"), [call("a")])
        await writer.flush()  # 2 rows: on the loop
        assert asked == []
        for letter in "bcd":
            writer.add(query(letter), [call(letter)])
        await writer.flush()  # 6 rows: more than a round's, on a thread
        assert asked == ["_write"]
        await writer.stop()

    asyncio.run(scenario())
    assert stored(url) == (["a", "b", "c", "d"], 4)


def test_sqlite_rows_wait_for_a_thread_while_another_writer_holds_the_file(
    on_sqlite: tuple[str, QueryLogWriter, list[str]],
) -> None:
    """Another process's transaction holds SQLite's write lock: the round is not written on
    the loop (which would wait, or fail), but on a thread that waits its turn."""
    url, writer, asked = on_sqlite
    holder = sqlite3.connect(str(writer.engine.url.database), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def scenario() -> None:
        writer.add(query("a"), [call("a")])
        flushing = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0.3)
        assert not flushing.done()  # waiting on its thread, the loop free meanwhile
        holder.execute("ROLLBACK")
        await flushing

    try:
        asyncio.run(scenario())
    finally:
        holder.close()
    assert asked == ["_write"]
    assert stored(url) == (["a"], 1)


def test_sqlite_the_loops_writes_are_checkpointed_on_a_thread(
    on_sqlite: tuple[str, QueryLogWriter, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer, asked = on_sqlite
    monkeypatch.setattr(querylog, "CHECKPOINT_SECONDS", 0.0)

    async def scenario() -> None:
        await writer._checkpoint_when_due()  # nothing written yet: nothing to do
        assert asked == []
        writer.add(query("a"), [call("a")])
        await writer.flush()
        await writer._checkpoint_when_due()
        assert asked == ["checkpoint"]
        await writer._checkpoint_when_due()  # nothing written since
        assert asked == ["checkpoint"]
        await writer.stop()

    asyncio.run(scenario())
