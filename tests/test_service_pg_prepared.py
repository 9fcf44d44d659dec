"""The policy store's PostgreSQL reads as prepared statements (service/pg_prepared.py).

Against a real PostgreSQL: the values read the same as through psycopg's cursor, a session
that lost its prepared statements prepares them again, a failure raises the driver's own
exception class (so the store still tells a timeout from a lost connection), and the store
answers the same on both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text

from olv import db
from service import pg_prepared, store
from service.store import SqlPolicyStore


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    engine = create_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM coverage"))
        conn.execute(text("DELETE FROM policy"))
        conn.execute(
            text(
                "INSERT INTO policy (id, naic, policy_number, policy_key, policy_type,"
                " pending_review) VALUES (1, '12345', 'AB-1', 'AB1', 'I', false),"
                " (2, '12345', 'FL-2', 'FL2', 'F', true)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO coverage (policy_id, naic, vin, effective_date, expiration_date,"
                " cancel_date) VALUES (1, '12345', '1HGCM82633A004352', '2026-01-01',"
                " '2026-12-31', NULL), (2, '12345', NULL, '2025-06-01', NULL, '2026-02-03')"
            )
        )
    engine.dispose()
    yield pg_database


def _driver(url: str) -> psycopg.Connection[Any]:
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(plain, autocommit=True)


def _through_cursor(conn: psycopg.Connection[Any], sql: str, params: tuple[str, ...]) -> Any:
    return conn.execute(sql.replace("?", "%s"), params).fetchall()


def test_rows_read_as_through_the_cursor_nulls_and_booleans_included(pg_url: str) -> None:
    conn = _driver(pg_url)
    prepared: set[bytes] = set()
    for sql, params in (
        (store._POLICY_SQL, ("12345", "AB1")),
        (store._POLICY_SQL, ("12345", "FL2")),
        (store._POLICY_SQL, ("12345", "NONE")),
        (store._VIN_SQL, ("12345", "1HGCM82633A004352")),
        (store._SERVES_SQL, ("12345",)),
        (store._SERVES_SQL, ("99999",)),
    ):
        ours = pg_prepared.run(conn, prepared, store._PREPARED[sql], params)
        theirs = _through_cursor(conn, sql, params)
        assert ours == theirs
        assert [[type(v) for v in row] for row in ours] == [
            [type(v) for v in row] for row in theirs
        ]
    pending = pg_prepared.run(conn, prepared, store._PREPARED[store._POLICY_SQL], ("12345", "FL2"))
    assert pending[0][2] is True and pending[0][3] is None and pending[0][6] == date(2026, 2, 3)
    assert prepared == {b"olv_policy", b"olv_vin", b"olv_serves"}
    conn.close()


def test_a_session_that_lost_its_statements_prepares_them_again(pg_url: str) -> None:
    conn = _driver(pg_url)
    prepared: set[bytes] = set()
    read = store._PREPARED[store._SERVES_SQL]
    assert pg_prepared.run(conn, prepared, read, ("12345",)) == [(1,)]
    conn.execute("DEALLOCATE ALL")  # what a pooler's DISCARD ALL does to the session
    assert pg_prepared.run(conn, prepared, read, ("12345",)) == [(1,)]
    # A name the set forgot but the session holds is taken as prepared, not an error.
    prepared.clear()
    assert pg_prepared.run(conn, prepared, read, ("12345",)) == [(1,)]
    conn.close()


def test_failures_raise_the_drivers_own_classes(pg_url: str) -> None:
    conn = _driver(pg_url)
    slow = pg_prepared.statement("slow", "SELECT pg_sleep(?::float8)")
    conn.execute("SET statement_timeout = 50")
    with pytest.raises(psycopg.errors.QueryCanceled) as caught:
        pg_prepared.run(conn, set(), slow, ("1",))
    assert caught.value.sqlstate == "57014"
    broken = pg_prepared.statement("broken", "SELECT no_such_column FROM policy")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        pg_prepared.run(conn, set(), broken, ())
    db.interrupt(conn)  # the socket shut down, as the deadline watchdog does
    with pytest.raises(psycopg.OperationalError):
        pg_prepared.run(conn, set(), store._PREPARED[store._PING_SQL], ())
    conn.close()


def test_the_store_answers_the_same_through_prepared_reads(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    policies = SqlPolicyStore(engine)
    try:
        policy = policies.find_policy("12345", "AB1")
        assert policy is not None and policy.policy_type == "I" and not policy.pending_review
        (period,) = policy.periods
        assert period.vin == "1HGCM82633A004352"
        assert (period.effective, period.expiration, period.cancellation) == (
            date(2026, 1, 1),
            date(2026, 12, 31),
            None,
        )
        fleet = policies.find_policy("12345", "FL2")
        assert fleet is not None and fleet.pending_review
        assert [p.cancellation for p in fleet.periods] == [date(2026, 2, 3)]
        assert [p.policy_id for p in policies.vin_periods("12345", "1HGCM82633A004352")] == [1]
        assert policies.serves("12345") and not policies.serves("99999")
        assert policies.healthy()
    finally:
        policies.close()
        engine.dispose()


def test_each_statement_is_planned_once_and_every_plan_walks_an_index(pg_url: str) -> None:
    """The store's session plans its statements once, without their values; so each plan
    must be an index walk for any value, a NAIC not in the book included. A session that
    planned while the book was nearly empty plans again after an import (which analyzes)."""
    conn = _driver(pg_url)
    prepared: set[bytes] = set()
    for read in store._PREPARED.values():  # planned against the fixture's two policies
        pg_prepared.run(conn, prepared, read, _any_values(read))
    assert conn.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
    with _driver(pg_url) as loader:  # a book of some size, analyzed as the import does
        loader.execute(
            "INSERT INTO policy (id, naic, policy_number, policy_key, policy_type,"
            " pending_review) SELECT g, '1234' || (g % 4), 'K' || g, 'K' || g, 'I', false"
            " FROM generate_series(10, 20000) AS g"
        )
        loader.execute(
            "INSERT INTO coverage (policy_id, naic, vin, effective_date) SELECT g,"
            " '1234' || (g % 4), 'VIN' || g, '2026-01-01' FROM generate_series(10, 20000) AS g"
        )
        loader.execute("ANALYZE policy")
        loader.execute("ANALYZE coverage")
    for read in store._PREPARED.values():
        markers = read.text.decode().count("$")
        name = read.name.decode()
        call = f"EXECUTE {name}({', '.join(['NULL'] * markers)})" if markers else f"EXECUTE {name}"
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {call}").fetchall())
        assert "Seq Scan" not in plan, (read.name, plan)
    conn.execute("DISCARD ALL")  # a pooler's reset: settings and statements gone
    assert pg_prepared.run(conn, prepared, store._PREPARED[store._SERVES_SQL], ("12345",)) == [(1,)]
    assert conn.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
    conn.close()


def _any_values(read: pg_prepared.Statement) -> tuple[Any, ...]:
    text_ = read.text.decode()
    if "text[]" in text_:
        return tuple(["12345", "99999"] for _ in range(text_.count("$")))
    return tuple("12345" for _ in range(text_.count("$")))
