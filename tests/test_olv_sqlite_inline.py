"""Short SQLite writes on the calling thread, only when they need not wait (olv/sqlite_inline.py):
what runs, what is refused at once and left undone, and who checkpoints."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from olv import db, sqlite_inline
from olv.sqlite_inline import BUSY, InlineWriter, checkpoint


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = db.make_engine(f"sqlite:///{tmp_path / 'inline.db'}")
    with made.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    yield made
    made.dispose()


def _insert(key: str, conn: sqlite3.Connection) -> str:
    conn.execute("INSERT INTO t (k, v) VALUES (?, 1)", (key,))
    conn.commit()
    return key


def _keys(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("SELECT k FROM t ORDER BY k")]


def test_a_write_runs_on_the_calling_thread_and_commits(engine: Engine) -> None:
    writer = InlineWriter(engine)
    threads: list[int] = []

    def work(conn: sqlite3.Connection) -> str:
        threads.append(threading.get_ident())
        return _insert("a", conn)

    assert writer.run(work) == "a"
    assert threads == [threading.get_ident()]
    assert _keys(engine) == ["a"]
    assert writer.written_at > 0
    writer.close()


def test_its_connection_never_waits_for_a_lock_nor_checkpoints(engine: Engine) -> None:
    writer = InlineWriter(engine)

    def settings(conn: sqlite3.Connection) -> tuple[int, int, str]:
        return (
            conn.execute("PRAGMA busy_timeout").fetchone()[0],
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
            conn.execute("PRAGMA journal_mode").fetchone()[0],
        )

    assert writer.run(settings) == (0, 0, "wal")
    writer.close()


def test_held_by_another_thread_of_this_process_the_write_is_not_tried(engine: Engine) -> None:
    writer = InlineWriter(engine)
    ran: list[str] = []
    lock = db.sqlite_write_lock(engine)
    assert lock is not None
    with lock:  # e.g. the query log writing on a thread
        outcome = writer.run(lambda conn: ran.append("x"))
    assert outcome is BUSY and ran == []
    assert writer.run(lambda conn: _insert("b", conn)) == "b"  # free again: runs
    writer.close()


def test_held_by_another_connection_it_is_refused_at_once_and_leaves_nothing(
    engine: Engine,
) -> None:
    """Another process's writer (here a connection outside this process's lock) holds SQLite's
    write lock: the write answers BUSY without SQLite's busy wait, its own earlier statement of
    the same transaction undone, and the connection serves the next write."""
    writer = InlineWriter(engine)
    holder = sqlite3.connect(str(engine.url.database), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    def two_statements(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT count(*) FROM t").fetchone()  # a read goes through (WAL)
        _insert("c", conn)

    try:
        started = time.monotonic()
        assert writer.run(two_statements) is BUSY
        assert time.monotonic() - started < 0.5  # the engine's own wait would be 30 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert _keys(engine) == []
    assert writer.run(lambda conn: _insert("d", conn)) == "d"
    assert _keys(engine) == ["d"]
    writer.close()


def test_another_error_is_raised_rolled_back_and_the_connection_made_again(
    engine: Engine,
) -> None:
    writer = InlineWriter(engine)
    assert writer.run(lambda conn: _insert("e", conn)) == "e"

    def duplicate(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('f', 1)")
        _insert("e", conn)  # the key is taken

    with pytest.raises(sqlite3.IntegrityError):
        writer.run(duplicate)
    assert _keys(engine) == ["e"]  # 'f' of the failed transaction is gone
    assert writer.run(lambda conn: _insert("g", conn)) == "g"
    lock = db.sqlite_write_lock(engine)
    assert lock is not None and lock.acquire(blocking=False)  # never left held
    lock.release()
    writer.close()


def test_a_closed_writer_runs_nothing(engine: Engine) -> None:
    writer = InlineWriter(engine)
    writer.run(lambda conn: _insert("h", conn))
    writer.close()
    assert writer.run(lambda conn: _insert("i", conn)) is BUSY
    assert _keys(engine) == ["h"]


def test_the_pages_it_writes_reach_the_database_file_at_a_checkpoint(engine: Engine) -> None:
    writer = InlineWriter(engine)
    for index in range(1500):  # more pages than SQLite's own 1,000-page checkpoint
        writer.run(lambda conn, k=f"k{index:05d}-{'x' * 400}": _insert(k, conn))

    main, wal = Path(str(engine.url.database)), Path(f"{engine.url.database}-wal")
    # Every commit appended its pages to the log, which SQLite's own checkpoint would have
    # started over at 1,000 pages; the database file still holds the empty table alone.
    assert wal.stat().st_size > 2000 * 4096
    before = main.stat().st_size
    assert before < 100 * 4096
    checkpoint(engine)
    assert main.stat().st_size > before + 100 * 4096  # the rows are in the file now
    # And the log starts over: as many writes again reuse it rather than grow it.
    grown = wal.stat().st_size
    for index in range(1500):
        writer.run(lambda conn, k=f"m{index:05d}-{'x' * 400}": _insert(k, conn))
    assert wal.stat().st_size < 1.5 * grown  # not twice: written over from its start
    assert len(_keys(engine)) == 3000
    writer.close()


def _slow_for(seconds: float, conn: sqlite3.Connection) -> int:
    """A statement that runs ``seconds`` (SQLite's own steps, which an interrupt cuts)."""
    until = time.monotonic() + seconds
    conn.create_function("going", 0, lambda: time.monotonic() < until)
    conn.execute("INSERT INTO t (k, v) VALUES ('slow', 1)")
    row = conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE going())"
        " SELECT count(*) FROM c"
    ).fetchone()
    conn.commit()
    return int(row[0])


def test_a_write_that_runs_long_is_cut_undone_and_the_next_go_elsewhere_a_while(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_inline, "OFF_SECONDS", (0.3, 0.6))
    writer = InlineWriter(engine)
    started = time.monotonic()
    assert writer.run(lambda conn: _slow_for(5.0, conn)) is BUSY
    assert time.monotonic() - started < 1.0  # cut near LIMIT_SECONDS, not after 5 s
    assert _keys(engine) == []  # its insert undone
    ran: list[str] = []
    assert writer.run(lambda conn: ran.append("x")) is BUSY  # threads take them for now
    assert ran == []
    time.sleep(0.35)
    assert writer.run(lambda conn: _insert("after", conn)) == "after"  # back on this thread
    assert writer.run(lambda conn: _slow_for(5.0, conn)) is BUSY  # cut again
    time.sleep(0.35)
    assert writer.run(lambda conn: ran.append("y")) is BUSY  # off for longer the second time
    time.sleep(0.3)
    assert writer.run(lambda conn: _insert("later", conn)) == "later"
    assert _keys(engine) == ["after", "later"]
    writer.close()


def test_a_quick_write_is_never_cut(engine: Engine) -> None:
    """A write under the limit, one after another: none is cut, none goes elsewhere."""
    writer = InlineWriter(engine)
    outcomes = [writer.run(lambda conn, i=i: _insert(f"q{i:04d}", conn)) for i in range(300)]
    assert BUSY not in outcomes
    assert writer.run(lambda conn: _slow_for(0.01, conn)) > 0
    writer.close()


def test_the_log_starts_over_though_writes_go_on_during_the_checkpoints(engine: Engine) -> None:
    """Writes never stop (a portal at hundreds of verifications a second): a checkpoint that
    ran beside them alone never found the log all copied when the next write began, and the
    log grew without end. Checkpointed every 0.2 s, it stays the size of a few rounds' writes,
    not of all of them (the file keeps its largest size: a long round on a loaded machine
    leaves it larger, never growing with the total)."""
    stop = threading.Event()
    written = [0]

    def writing() -> None:
        writer = InlineWriter(engine)  # another thread of the process, as the loop is
        while not stop.is_set():
            key = f"w{written[0]:07d}"
            if writer.run(lambda conn, key=key: _insert(key, conn)) is not BUSY:
                written[0] += 1
        writer.close()

    wal = Path(f"{engine.url.database}-wal")
    other = threading.Thread(target=writing)
    other.start()
    try:
        time.sleep(0.2)
        checkpoint(engine)
        first_round = (written[0], wal.stat().st_size)
        for _ in range(11):
            time.sleep(0.2)
            checkpoint(engine)
        total = written[0]
    finally:
        stop.set()
        other.join()
    writes, size = first_round
    assert writes > 50 and total > 6 * writes, (first_round, total)  # writes went on
    per_write = size / writes  # the log's bytes per write, before any start-over
    assert wal.stat().st_size < per_write * total / 3, (first_round, total, wal.stat().st_size)
