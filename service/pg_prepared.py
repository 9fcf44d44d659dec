"""The policy store's reads on PostgreSQL as libpq prepared statements (``psycopg.pq``).

psycopg's cursor (its Python-level execute, adaptation and row making) took about three times
the client CPU of the read itself: 30 µs against 9 µs for ``PGconn.exec_prepared`` on the same
query, and a verification makes one or two. The store's few statements are fixed, so each is
prepared once per connection, and its rows are loaded by psycopg's own loaders (a
``Transformer`` for the connection, in C: the values the cursor gives).
libpq releases the GIL while it waits, and a socket shut down by
:func:`olv.db.interrupt` ends the call with an error, so the deadline gate works as before.
:func:`run_awaited` sends the same messages and awaits each answer on the event loop (a
batch's read, :mod:`service.coalesce`).

Only for a session that holds prepared statements: behind a transaction pooler
(``?pool_mode=transaction``) the store keeps psycopg's own one-message path.

Such a session plans each statement once (``plan_cache_mode = force_generic_plan``, set with
its first statement). By default PostgreSQL plans a prepared statement afresh for its values
while that looks cheaper than the generic plan, and for the many-key reads (their keys in
arrays, whose length the generic plan guesses) it always does: a batch of 4 to 8 keys cost the
backend 19-35 µs of CPU per key, against 5-7 µs with the one plan. The statements are written
so that their one plan is an index walk whatever the values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

from olv import libpq


@dataclass(frozen=True, slots=True)
class Statement:
    """One read: its name on the connection and its text with ``$n`` markers."""

    name: bytes
    text: bytes


def statement(name: str, sql: str) -> Statement:
    """``sql`` written with ``?`` markers (the store's SQLite form)."""
    parts = sql.split("?")
    text = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))
    return Statement(f"olv_{name}".encode(), text.encode())


def run(
    driver: psycopg.Connection[Any],
    prepared: set[bytes],
    read: Statement,
    params: Sequence[str | Sequence[str]],
) -> list[tuple[Any, ...]]:
    """The rows of ``read`` on ``driver``; ``prepared``: the names this connection holds."""
    pgconn = driver.pgconn
    values = _values(params)
    for _ in range(2):  # a second time only if the session lost its prepared statements
        if read.name not in prepared:
            if not prepared:
                libpq.done(pgconn.exec_(_PLAN_ONCE), pgconn)
            libpq.done(pgconn.prepare(read.name, read.text), pgconn)
            prepared.add(read.name)
        result = pgconn.exec_prepared(read.name, values)
        if not _lost(result, prepared):
            break
    return _rows(result, driver)


async def run_awaited(
    driver: psycopg.Connection[Any],
    prepared: set[bytes],
    read: Statement,
    params: Sequence[str | Sequence[str]],
) -> list[tuple[Any, ...]]:
    """:func:`run` without blocking the running event loop: each message is sent and its
    answer awaited on the loop's own reader, so the loop serves other requests meanwhile."""
    pgconn = driver.pgconn
    values = _values(params)
    for _ in range(2):
        if read.name not in prepared:
            if not prepared:
                pgconn.send_query(_PLAN_ONCE)
                libpq.done(await libpq.result(pgconn), pgconn)
            pgconn.send_prepare(read.name, read.text)
            libpq.done(await libpq.result(pgconn), pgconn)
            prepared.add(read.name)
        pgconn.send_query_prepared(read.name, values)
        result = await libpq.result(pgconn)
        if not _lost(result, prepared):
            break
    return _rows(result, driver)


def _values(params: Sequence[str | Sequence[str]]) -> list[bytes]:
    return [p.encode() if type(p) is str else text_array(p) for p in params]


def _lost(result: pq.abc.PGresult, prepared: set[bytes]) -> bool:
    """Whether the session lost its prepared statements and settings (a DISCARD ALL by a
    pooler): then ``prepared`` is emptied, so that they are set and prepared again."""
    if result.status == pq.ExecStatus.TUPLES_OK or not libpq.lost_statements(result):
        return False
    prepared.clear()
    return True


def text_array(values: Sequence[str]) -> bytes:
    """A ``text[]`` value in PostgreSQL's text form: every element quoted, so that commas,
    braces, blanks and the word NULL stay data (backslash and quote are escaped)."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return ("{" + ",".join(f'"{v}"' for v in quoted) + "}").encode()


# PostgreSQL plans a prepared statement afresh for its values while that looks cheaper: see
# the module's docstring.
_PLAN_ONCE = b"SET plan_cache_mode = force_generic_plan"


def _rows(result: pq.abc.PGresult, driver: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """The result's rows, each value made by psycopg's own loader for its column's type on
    ``driver`` (in C: the values its cursor gives, a date as a date), in a fifth of the time
    the same loop in Python took."""
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise libpq.error(result, driver.pgconn)
    loader = Transformer(driver)
    loader.set_pgresult(result)
    return loader.load_rows(0, result.ntuples, tuple)
