"""The portal's statements straight through libpq (portal/pg_statements.py) on a real
PostgreSQL: the same values as psycopg's cursor, psycopg's own errors, a session that lost its
prepared statements, and a statement cut short at a deadline."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from olv import libpq
from portal import pg_statements
from portal.state_reads import pyformat

T = TypeVar("T")

# Every kind of value the portal's statements read and write, in one row.
MIXED = (
    "SELECT :i::int AS i, :f::float8 AS f, :n::numeric AS n, :t AS t, :d::date AS d,"
    " :ts::timestamptz AS ts, :b::bool AS b, :arr::text[] AS arr, NULL::text AS nothing,"
    " (SELECT array_agg(x) FROM unnest(:arr::text[]) WITH ORDINALITY AS u(x, o)) AS again"
)
PARAMS: dict[str, Any] = {
    "i": 7,
    "f": 0.25,
    "n": Decimal("12.50"),
    "t": "plain 'quoted' \\ text, with {braces}",
    "d": dt.date(2026, 12, 7),
    "ts": dt.datetime(2026, 12, 7, 18, 30, tzinfo=dt.UTC),
    "b": True,
    "arr": ["a", "b,c", 'd"e', "NULL", ""],
}


def _on_pool(url: str, work: Callable[[AsyncConnectionPool[Any]], Awaitable[T]]) -> T:
    async def main() -> T:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            libpq.conninfo(url), min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
        )
        await pool.open(wait=True)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def test_rows_are_the_values_psycopg_s_cursor_gives(pg_database: str) -> None:
    async def both(pool: AsyncConnectionPool[Any]) -> tuple[Any, Any, Any]:
        async with pool.connection() as conn:
            direct = await pg_statements.rows(conn, MIXED, PARAMS)
            again = await pg_statements.rows(conn, MIXED, PARAMS)  # prepared by now
            async with conn.cursor() as cursor:
                await cursor.execute(pyformat(MIXED), PARAMS)
                through_cursor = await cursor.fetchall()
        return direct, again, through_cursor

    direct, again, through_cursor = _on_pool(pg_database, both)
    assert direct == through_cursor == again
    row = direct[0]
    assert row[:8] == (
        7,
        0.25,
        Decimal("12.50"),
        PARAMS["t"],
        PARAMS["d"],
        PARAMS["ts"],
        True,
        PARAMS["arr"],
    )
    assert row[8] is None and row[9] == PARAMS["arr"]
    assert [type(value) for value in row[:7]] == [
        int,
        float,
        Decimal,
        str,
        dt.date,
        dt.datetime,
        bool,
    ]


def test_a_statement_without_rows_gives_none_and_commits(pg_database: str) -> None:
    async def write(pool: AsyncConnectionPool[Any]) -> tuple[Any, Any]:
        async with pool.connection() as conn:
            await pg_statements.rows(conn, "CREATE TABLE IF NOT EXISTS pgs_t (k text)", {})
            written = await pg_statements.rows(conn, "INSERT INTO pgs_t VALUES (:k)", {"k": "x"})
        async with pool.connection() as conn:  # another connection sees it: committed
            seen = await pg_statements.rows(conn, "SELECT k FROM pgs_t", {})
        return written, seen

    assert _on_pool(pg_database, write) == ([], [("x",)])


def test_a_refused_statement_raises_psycopg_s_own_error(pg_database: str) -> None:
    async def refused(pool: AsyncConnectionPool[Any]) -> list[Any]:
        async with pool.connection() as conn:
            with pytest.raises(psycopg.errors.DivisionByZero):
                await pg_statements.rows(conn, "SELECT 1 / :zero::int", {"zero": 0})
            with pytest.raises(psycopg.errors.UndefinedTable):
                await pg_statements.rows(conn, "SELECT * FROM no_such_table", {})
            # The connection stays usable for the next statement.
            return await pg_statements.rows(conn, "SELECT 1 / :one::int", {"one": 1})

    assert _on_pool(pg_database, refused) == [(1,)]


def test_a_session_that_lost_its_prepared_statements_prepares_again(pg_database: str) -> None:
    async def lost(pool: AsyncConnectionPool[Any]) -> list[Any]:
        async with pool.connection() as conn:
            first = await pg_statements.rows(conn, "SELECT :v::int + 1", {"v": 1})
            await conn.execute("DEALLOCATE ALL")  # what a pooler's DISCARD ALL does too
            second = await pg_statements.rows(conn, "SELECT :v::int + 1", {"v": 2})
        return [first, second]

    assert _on_pool(pg_database, lost) == [[(2,)], [(3,)]]


def test_the_same_statement_with_other_parameter_types_is_prepared_apart(
    pg_database: str,
) -> None:
    async def typed(pool: AsyncConnectionPool[Any]) -> list[Any]:
        async with pool.connection() as conn:
            whole = await pg_statements.rows(conn, "SELECT (:v + 0)::text", {"v": 1})
            half = await pg_statements.rows(conn, "SELECT (:v + 0)::text", {"v": 1.5})
        return [whole, half]

    # Prepared once for an integer, 1.5 would be refused or rounded.
    assert _on_pool(pg_database, typed) == [[("1",)], [("1.5",)]]


def test_a_statement_cut_short_is_cancelled_on_the_server_and_its_connection_replaced(
    pg_database: str,
) -> None:
    """A take waiting for a row lock when its request's deadline comes must not land later:
    the cut statement is cancelled on the server, and the pool goes on with a new connection."""

    async def cut(pool: AsyncConnectionPool[Any]) -> tuple[Any, ...]:
        async with pool.connection() as setup:
            await setup.execute("CREATE TABLE IF NOT EXISTS pgs_lock (k int PRIMARY KEY, v int)")
            await setup.execute("INSERT INTO pgs_lock VALUES (1, 0) ON CONFLICT DO NOTHING")
        holder = await psycopg.AsyncConnection.connect(libpq.conninfo(pg_database))
        try:
            await holder.execute(
                "SELECT v FROM pgs_lock WHERE k = 1 FOR UPDATE"
            )  # in a transaction
            cut_conn: list[Any] = []

            async def take() -> Any:
                async with pool.connection() as conn:
                    cut_conn.append(conn)
                    return await pg_statements.rows(
                        conn, "UPDATE pgs_lock SET v = v + 1 WHERE k = :k RETURNING v", {"k": 1}
                    )

            task = asyncio.ensure_future(take())
            await asyncio.sleep(0.5)  # the update now waits for the lock
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            closed = cut_conn[0].closed
            await holder.rollback()  # the lock goes: an update still queued would run now
        finally:
            await holder.close()
        await asyncio.sleep(0.3)
        async with pool.connection() as conn:
            value = await pg_statements.rows(conn, "SELECT v FROM pgs_lock WHERE k = :k", {"k": 1})
            waiting = await pg_statements.rows(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'UPDATE pgs_lock%'"
                " AND state = 'active'",
                {},
            )
            reused = conn is cut_conn[0]
        return closed, value, waiting, reused

    closed, value, waiting, reused = _on_pool(pg_database, cut)
    assert closed, "the cut statement's connection was given back open"
    assert value == [(0,)], "the cut update landed after its cancellation"
    assert waiting == [(0,)]
    assert not reused


def test_a_connection_lost_mid_statement_raises_and_the_pool_goes_on(pg_database: str) -> None:
    """The server ends the backend while its statement runs (a restart, an administrator):
    the statement raises psycopg's OperationalError, which the reader answers as a 503, and
    the pool hands out a working connection next."""

    async def lost(pool: AsyncConnectionPool[Any]) -> tuple[Any, Any]:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        killer = await psycopg.AsyncConnection.connect(libpq.conninfo(pg_database), autocommit=True)
        try:

            async def terminate() -> None:
                await asyncio.sleep(0.3)
                await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))

            async with pool.connection() as conn:
                assert conn.info.backend_pid == pid  # the one connection of the pool
                ending = asyncio.ensure_future(terminate())
                with pytest.raises(psycopg.OperationalError):
                    await pg_statements.rows(conn, "SELECT pg_sleep(:s::float8)", {"s": 5.0})
                await ending
        finally:
            await killer.close()
        async with pool.connection() as conn:
            after = await pg_statements.rows(conn, "SELECT :v::int", {"v": 1})
            other = conn.info.backend_pid
        return after, other != pid

    assert _on_pool(pg_database, lost) == ([(1,)], True)
