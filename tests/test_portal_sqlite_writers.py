"""On SQLite the portal's writers take turns on one lock per file (olv.db.sqlite_write_lock)
instead of waiting in SQLite's busy handler, whose sleeps of up to 100 ms made a tail of
hundreds of milliseconds under load (bench/RESULTS.md, "State portal"). A write still gives up
when its request's budget is spent; a read never waits for the lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from olv import db
from portal.querylog import QueryLogWriter
from portal.state_reads import StateReader
from tests.helpers import loopback
from tests.test_portal_querylog import call, query, stored

WRITE = "UPDATE query_log SET http_status = http_status WHERE id = :id"
READ = "SELECT count(*) FROM query_log WHERE id = :id"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return loopback.copied_database(sqlite_template, tmp_path)


def test_one_lock_per_sqlite_file_and_none_on_postgresql(sqlite_url: str, tmp_path: Path) -> None:
    first, second = db.make_engine(sqlite_url), db.make_engine(sqlite_url)
    other = db.make_engine(f"sqlite:///{tmp_path / 'other.db'}")
    server = db.make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")
    try:
        lock = db.sqlite_write_lock(first)
        assert lock is not None and db.sqlite_write_lock(second) is lock
        assert db.sqlite_write_lock(other) not in (None, lock)
        assert db.sqlite_write_lock(server) is None
    finally:
        for engine in (first, second, other, server):
            engine.dispose()


def test_a_write_waits_its_turn_and_gives_up_at_its_budget(sqlite_url: str) -> None:
    engine = db.make_engine(sqlite_url)
    reader = StateReader(engine, 5.0)
    lock = db.sqlite_write_lock(engine)
    assert lock is not None
    try:
        with lock:  # another writer of this process is in its transaction
            assert reader._execute_sync(READ, {"id": "x"}, 0.5) == [(0,)]  # reads pass
            started = time.monotonic()
            with pytest.raises(sqlite3.OperationalError):
                reader._execute_sync(WRITE, {"id": "x"}, 0.3)
            waited = time.monotonic() - started
        assert 0.25 <= waited < 5.0, waited
        assert reader._execute_sync(WRITE, {"id": "x"}, 0.3) == []  # its turn: written
        assert lock.acquire(blocking=False), "the lock was left held"
        lock.release()
    finally:
        asyncio.run(reader.close())
        engine.dispose()


def test_the_query_log_writer_takes_its_turn_too(sqlite_url: str) -> None:
    engine = db.make_engine(sqlite_url)
    writer = QueryLogWriter(engine)
    lock = db.sqlite_write_lock(engine)
    assert lock is not None
    writer.add(query("a"), [call("a")])
    flushing = threading.Thread(target=lambda: asyncio.run(writer.flush()))
    try:
        with lock:
            flushing.start()
            flushing.join(0.5)
            assert flushing.is_alive(), "the writer wrote while another writer held the turn"
            assert stored(sqlite_url) == ([], 0)
        flushing.join(10)
        assert not flushing.is_alive()
        assert stored(sqlite_url) == (["a"], 1)
    finally:
        flushing.join(10)
        engine.dispose()
