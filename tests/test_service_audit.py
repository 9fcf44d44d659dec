"""Audit writer batching, flush on close, show filters and purge by age."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from olv import db
from service import audit
from service.audit import (
    AuditEntry,
    AuditWriter,
    _copy_fields,
    _copy_text,
    _copy_time,
    _sqlite_time,
)
from service.models import AuditRecord, AuditWrite
from tests.helpers import prewarmed


def _entry(at: datetime, vin: str) -> AuditEntry:
    return AuditEntry(
        at,
        "ip:127.0.0.1",
        "00200809",
        "10001",
        "P-1",
        vin,
        "2026-11-01T00:00:00",
        "VEHREG",
        "Unconfirmed",
        "PKEY2 VIN1",
        1.25,
    )


def _count(url: str) -> int:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(select(func.count()).select_from(AuditRecord))
    engine.dispose()
    return int(n or 0)


def test_close_flushes_everything_queued(db_url: str) -> None:
    engine = db.make_engine(db_url)
    writer = AuditWriter(engine, flush_seconds=60, batch_size=7)
    now = datetime.now(UTC)
    for i in range(50):
        writer.record(_entry(now, f"VIN{i}"))
    assert _count(db_url) == 0  # nothing written before the interval ends …
    writer.close()
    assert _count(db_url) == 50  # … and nothing lost on a graceful stop
    engine.dispose()


def test_rows_recorded_from_several_threads_while_the_writer_drains_are_all_written(
    db_url: str,
) -> None:
    """The request path appends while the writer takes rows many times a second: no row is
    lost between the two, and each is written once."""
    engine = db.make_engine(db_url)
    writer = AuditWriter(engine, flush_seconds=0.002)
    now = datetime.now(UTC)

    def record(thread: int) -> None:
        for i in range(3000):
            writer.record(_entry(now, f"T{thread}V{i}"))
            if i % 500 == 0:
                time.sleep(0.002)  # let the writer take a batch in the middle of the appends

    threads = [threading.Thread(target=record, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    with engine.connect() as conn:
        rows, vins = conn.execute(
            select(func.count(), func.count(AuditRecord.vin.distinct()))
        ).one()
    engine.dispose()
    assert (rows, vins) == (12000, 12000)


def test_purge_removes_only_rows_older_than_the_age(db_url: str) -> None:
    engine = db.make_engine(db_url)
    writer = AuditWriter(engine, flush_seconds=60)
    now = datetime.now(UTC)
    writer.record(_entry(now - timedelta(days=400), "OLDVIN"))
    writer.record(_entry(now - timedelta(days=100), "MIDVIN"))
    writer.record(_entry(now, "NEWVIN"))
    writer.close()
    engine.dispose()
    env = {**os.environ, "OLV_DATABASE_URL": db_url}

    def olv(*args: str) -> subprocess.CompletedProcess[str]:
        return prewarmed.run(args, env, timeout=60)

    rows = [json.loads(line) for line in olv("audit", "show").stdout.splitlines()]
    assert [r["vin"] for r in rows] == ["OLDVIN", "MIDVIN", "NEWVIN"]
    assert rows[0]["reason_codes"] == ["PKEY2", "VIN1"] and rows[0]["latency_ms"] == 1.25
    since = (now - timedelta(days=150)).date().isoformat()
    assert [
        json.loads(x)["vin"] for x in olv("audit", "show", "--since", since).stdout.splitlines()
    ] == ["MIDVIN", "NEWVIN"]
    default = olv("audit", "purge")  # default retention: 190 days
    assert default.returncode == 0 and default.stdout.startswith("1 ")
    assert olv("audit", "purge", "--older-than", "30").stdout.startswith("1 ")
    assert [json.loads(x)["vin"] for x in olv("audit", "show").stdout.splitlines()] == ["NEWVIN"]


def test_values_with_tabs_line_breaks_backslashes_and_nul_are_written_as_given(
    db_url: str,
) -> None:
    """XML text may hold tabs and line breaks, a requester name anything: each value comes
    back as recorded (NUL, which PostgreSQL text cannot hold, dropped), and one odd row does
    not hold up the rows beside it."""
    engine = db.make_engine(db_url)
    writer = AuditWriter(engine, flush_seconds=60)
    now = datetime.now(UTC)
    odd = AuditEntry(
        now,
        "key:a\\b\tc",
        "00200809",
        "100\n01",
        "P\\N-1\r\n",
        "VIN\\N",
        "2026-11-01\tT00",
        "VEH\x00REG",
        "Unconfirmed",
        "PKEY2 VIN1",
        0.5,
    )
    writer.record(_entry(now, "BEFORE"))
    writer.record(odd)
    writer.record(_entry(now, "AFTER"))
    writer.close()
    with engine.connect() as conn:
        rows = conn.execute(select(AuditRecord).order_by(AuditRecord.id)).all()
    engine.dispose()
    assert [r.vin for r in rows] == ["BEFORE", "VIN\\N", "AFTER"]
    row = rows[1]
    assert (row.requester, row.naic, row.policy_key) == ("key:a\\b\tc", "100\n01", "P\\N-1")
    assert row.verification_date == "2026-11-01\tT00"
    assert row.request_reason in ("VEHREG", "VEH\x00REG")  # SQLite keeps the NUL
    assert row.latency_ms == 0.5
    assert abs((db.as_utc(row.at) - now).total_seconds()) < 0.001


def test_the_writer_yields_the_cpu_and_rows_that_wait_too_long_are_written_anyway(
    db_url: str,
) -> None:
    """The writer thread runs at the lowest priority (the request loops come first); rows it
    leaves waiting past the catch-up age are written at normal priority, not lost or held.
    Here the low-priority writer sleeps for an hour, so only the catch-up can write them."""
    engine = db.make_engine(db_url)
    writer = AuditWriter(engine, flush_seconds=3600, catch_up_seconds=0.3)
    try:
        now = datetime.now(UTC)
        for i in range(25):
            writer.record(_entry(now, f"LATE{i}"))
        deadline = time.monotonic() + 10
        while _count(db_url) < 25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _count(db_url) == 25
        if sys.platform == "linux":
            writer_tid = writer._thread.native_id
            catch_up_tid = writer._catch_up.native_id
            assert writer_tid is not None and catch_up_tid is not None
            assert os.getpriority(os.PRIO_PROCESS, writer_tid) == audit.IDLE_NICE
            assert os.getpriority(os.PRIO_PROCESS, catch_up_tid) == os.getpriority(
                os.PRIO_PROCESS, 0
            )
    finally:
        writer.close()
        engine.dispose()
    assert _count(db_url) == 25


class _AnswerLost:
    """A connection of the pool whose commits are made by the server but whose answer never
    arrives (the server hung or died right after, as in a failover): the commit raises."""

    def __init__(self, conn: object, error: type[Exception], commits: bool) -> None:
        self._conn = conn
        self._error = error
        self._commits = commits

    def commit(self) -> None:
        if self._commits:
            self._conn.commit()  # type: ignore[attr-defined]
        raise self._error("server closed the connection unexpectedly")

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def _write_ids(url: str) -> list[str]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        ids = list(conn.scalars(select(AuditWrite.id)))
    engine.dispose()
    return ids


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
def test_a_write_whose_commit_went_unanswered_is_neither_lost_nor_doubled(
    db_url: str, committed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(db_url)
    writer = AuditWriter(engine, flush_seconds=3600)
    now = datetime.now(UTC)
    for i in range(3):
        writer.record(_entry(now, f"VIN{i}"))
    real = engine.raw_connection
    error = engine.dialect.loaded_dbapi.OperationalError
    monkeypatch.setattr(engine, "raw_connection", lambda: _AnswerLost(real(), error, committed))
    writer._write_queued()  # the flush the writer's thread would make
    assert _count(db_url) == (3 if committed else 0)
    monkeypatch.setattr(engine, "raw_connection", real)  # the database answers again
    writer._write_queued()
    assert _count(db_url) == 3  # written once, whether or not the first commit landed
    first = _write_ids(db_url)
    assert len(first) == 1
    for i in range(2):
        writer.record(_entry(now, f"MORE{i}"))
    writer.close()
    assert _count(db_url) == 5
    last = _write_ids(db_url)
    assert len(last) == 1 and last != first  # each write clears the id of the one before
    engine.dispose()


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.timezones()
    )
)
def test_row_times_are_the_instant_as_isoformat_writes_it(moment: datetime) -> None:
    """The texts made from the second's cached part and the microseconds are the ones
    isoformat writes, for any instant, zone and fraction (zero included), one after another
    in any order."""
    utc = moment.astimezone(UTC)
    assert _sqlite_time(moment) == utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    assert _copy_time(moment) == utc.isoformat(timespec="microseconds")
    assert datetime.fromisoformat(_copy_time(moment)) == utc


# Text that is mostly plain, with the characters COPY's text format escapes mixed in.
_FIELD = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from("AZ09 -:.\\\t\n\r\x00é"), max_size=12),
    st.text(max_size=12),
)


@settings(max_examples=1000, deadline=None)
@given(texts=st.tuples(*[_FIELD] * 9))
def test_a_row_checked_once_is_written_as_each_field_escaped_would_be(
    texts: tuple[str | None, ...],
) -> None:
    """The row-wide look for characters to escape never lets one through unescaped: the
    fields come out exactly as escaping each one gives them."""
    assert _copy_fields(texts) == "\t".join(map(_copy_text, texts))
