"""The PostgreSQL engine's pool (olv.db.ClosingQueuePool) against a real server: a
connection that a thread gives back after the engine was disposed (held, or still being
opened, at that moment) is closed, not left open in a pool nobody uses until the garbage
collector finds it."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import event, text

from olv import db


def _sessions_of(url: str, pid: int) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            return int(conn.scalar(query, {"pid": pid}) or 0)
    finally:
        engine.dispose()


def test_a_connection_given_back_after_the_engine_was_disposed_is_closed(
    pg_database: str,
) -> None:
    engine = db.make_engine(pg_database)
    held = engine.connect()  # as a thread still in a call while the process shuts down
    held.execute(text("SELECT 1"))
    raw = held.connection.dbapi_connection
    assert raw is not None
    pid = raw.info.backend_pid
    idle = engine.connect()
    idle.close()  # an idle pooled connection, which dispose() closes
    engine.dispose()
    assert not raw.closed and _sessions_of(pg_database, pid) == 1
    held.close()  # the call ends: its connection goes back to the disposed pool
    assert raw.closed
    deadline = time.monotonic() + 5
    while _sessions_of(pg_database, pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the closed socket a moment later
    assert _sessions_of(pg_database, pid) == 0
    with engine.connect() as conn:  # the engine goes on, with a new pool
        assert conn.scalar(text("SELECT 1")) == 1
    engine.dispose()


def test_a_connection_still_being_opened_when_the_engine_is_disposed_is_closed(
    pg_database: str,
) -> None:
    engine = db.make_engine(pg_database)
    opening, disposed = threading.Event(), threading.Event()

    def slow_open(_dbapi_connection: Any, _record: Any) -> None:
        opening.set()
        assert disposed.wait(10)  # the engine is disposed while this connection is made

    event.listen(engine, "connect", slow_open)
    held: list[Any] = []

    def use() -> None:
        with engine.connect() as conn:
            held.append(conn.connection.dbapi_connection)
            conn.execute(text("SELECT 1"))

    user = threading.Thread(target=use)
    user.start()
    assert opening.wait(10)
    engine.dispose()
    disposed.set()
    user.join(10)
    assert held and held[0].closed  # given back to the disposed pool: closed, not kept
    event.remove(engine, "connect", slow_open)
    engine.dispose()
