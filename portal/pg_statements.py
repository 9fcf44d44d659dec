"""A statement on one of the state reader's asyncio connections, straight through libpq.

Every verification runs the rate limit's statement (with its VIN's records) on the state
database's asyncio pool. Through psycopg's cursor a statement of that shape cost 122-123 µs
of client CPU, and 84-91 µs this way (a loop of 3,000 on this machine kind; 5.5 % of a
verification's instructions, bench/RESULTS.md): the cursor's query conversion, its
prepared-statement bookkeeping and its generators run in Python on every execution. Here a
statement is prepared once per connection under a name of its own, its answer awaited on the
event loop's own reader, and its parameters dumped and its rows loaded by psycopg's
:class:`~psycopg.adapt.Transformer` for the connection: the same adapters as the cursor's, so
the same values both ways.

What the cursor did and this keeps (``tests/test_portal_pg_statements.py``):

* a failure raises psycopg's own exception class for its SQLSTATE;
* a session that lost its prepared statements (a server-side ``DEALLOCATE``) prepares again;
* a statement cut short (its task cancelled at a request's deadline) is cancelled on the
  server, so a take that waited for a lock never lands after its request's 503; its
  connection is then closed, and the pool opens another in its place.

Only for connections that keep prepared statements: behind a transaction pooler
(``?pool_mode=transaction``) the reader keeps psycopg's cursor, which prepares nothing there.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import weakref
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection, pq
from psycopg.adapt import PyFormat, Transformer

from olv import libpq

Rows = list[tuple[Any, ...]]

TUPLES_OK = pq.ExecStatus.TUPLES_OK
COMMAND_OK = pq.ExecStatus.COMMAND_OK
ACTIVE = pq.TransactionStatus.ACTIVE
PARAMETER = re.compile(r"(?<!:):([a-z_]+)")  # ``:name``, not a ``::type`` cast
CANCEL_SECONDS = 2.0  # how long a cut statement's cancel request may take

# What each connection has prepared, by its libpq connection (gone with it).
_prepared: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()
# Each statement's text with ``$n`` markers and the order of its parameters' names.
_positional: dict[str, tuple[bytes, tuple[str, ...]]] = {}
# Each (statement, parameter types) pair's name on a connection.
_names: dict[tuple[str, tuple[int, ...]], bytes] = {}


async def rows(conn: AsyncConnection[Any], sql: str, params: Mapping[str, Any]) -> Rows:
    """The rows of ``sql`` (``:name`` parameters) on ``conn`` (autocommit: committed when it
    returns); none for a statement that returns no rows."""
    text, order = _positional_of(sql)
    tx = Transformer(conn)
    values = tx.dump_sequence([params[name] for name in order], [PyFormat.AUTO] * len(order))
    types = tuple(tx.types or ())
    name = _names.get((sql, types))
    if name is None:
        digest = hashlib.blake2b(repr((sql, types)).encode(), digest_size=8).hexdigest()
        name = _names[(sql, types)] = f"olv_portal_{digest}".encode()
    pgconn = conn.pgconn
    held = _prepared.get(pgconn)
    if held is None:
        held = _prepared[pgconn] = set()
    try:
        for _ in range(2):  # a second time only if the session lost its prepared statements
            if name not in held:
                await _prepare(pgconn, name, text, types)
                held.add(name)
            pgconn.send_query_prepared(name, values, param_formats=tx.formats)
            result = await libpq.result(pgconn)
            if result.status == TUPLES_OK or not libpq.lost_statements(result):
                break
            held.clear()
    except asyncio.CancelledError:
        await _abandon(conn)
        raise
    if result.status == TUPLES_OK:
        tx.set_pgresult(result)
        return tx.load_rows(0, result.ntuples, tuple)
    if result.status == COMMAND_OK:
        return []
    raise libpq.error(result, pgconn)


def _positional_of(sql: str) -> tuple[bytes, tuple[str, ...]]:
    found = _positional.get(sql)
    if found is None:
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        found = _positional[sql] = (PARAMETER.sub(number, sql).encode(), tuple(order))
    return found


async def _prepare(pgconn: Any, name: bytes, text: bytes, types: tuple[int, ...]) -> None:
    pgconn.send_prepare(name, text, param_types=types)
    libpq.done(await libpq.result(pgconn), pgconn)


async def _abandon(conn: AsyncConnection[Any]) -> None:
    """A statement cut short: cancelled on the server if it is still running there, and its
    connection closed (the pool opens another), since its answer may still be on the way."""
    try:
        if conn.pgconn.transaction_status == ACTIVE:
            await conn.cancel_safe(timeout=CANCEL_SECONDS)
    except Exception:  # noqa: BLE001, S110 - closed below either way
        pass
    finally:
        await conn.close()
