"""libpq for OLV's code that talks to PostgreSQL below psycopg's cursor: its URLs as libpq sees
them (for code that connects without SQLAlchemy), its errors as psycopg's exception classes,
and a sent statement's result awaited on the running event loop (:func:`result`).

A URL may name several servers, the libpq way (``?host=db1:5432&host=db2:5432`` or
``?host=db1,db2&port=5432,5432``, with ``target_session_attrs=read-write`` to pick the
primary): libpq tries them in turn. SQLAlchemy's psycopg dialect reads both spellings; a URL
merely re-rendered for libpq would not (libpq takes one ``host`` parameter, not several), so
the connection string is built from the dialect's own connect arguments.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:
    import psycopg
    from psycopg import pq

# libpq waits for a connection without end unless told otherwise: a server whose address drops
# packets (a host that is down) would hold a request past its budget, and with several servers
# in the URL the next one would never be tried. A server on the network answers a connect in
# milliseconds; 2 s (libpq's shortest) takes it as gone and moves on, within the 5-s budget.
CONNECT_TIMEOUT_SECONDS = 2

# OLV's own URL parameter saying a transaction pooler is in between (olv.db); libpq refuses it.
POOL_MODE = "pool_mode"

# SQLSTATEs of a session's prepared statements, for the code that prepares its own.
NOT_PREPARED = b"26000"  # invalid_sql_statement_name: the session lost it (a DISCARD ALL)
PREPARED_ALREADY = b"42P05"  # duplicate_prepared_statement: an earlier call's, answer lost


def conninfo(url: str | URL) -> str:
    """The libpq connection string (``key=value …``) of a ``postgresql+psycopg://`` URL."""
    from psycopg.conninfo import make_conninfo

    parsed = make_url(url).difference_update_query([POOL_MODE])
    _, params = parsed.get_dialect()().create_connect_args(parsed)
    params.pop("context", None)  # psycopg's adapters: not a connection parameter
    return make_conninfo("", **{key: str(value) for key, value in params.items()})


def servers(url: str | URL) -> str:
    """``host:port`` of every server the URL names, comma-separated (for messages)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo(url))
    hosts = str(params.get("host") or "localhost").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    return ",".join(f"{host}:{port}" for host, port in zip(hosts, ports, strict=False))


def error(result: pq.abc.PGresult, pgconn: pq.abc.PGconn) -> psycopg.Error:
    """psycopg's own exception class for a failed libpq call's result, so that a lost
    connection is told from a refused statement by SQLSTATE exactly as for psycopg's cursor."""
    import psycopg
    from psycopg import pq

    message = (result.error_message or pgconn.error_message).decode(errors="replace").strip()
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    if sqlstate:
        try:
            return psycopg.errors.lookup(sqlstate.decode())(message)
        except KeyError:
            pass
    return psycopg.OperationalError(message or "the database gave no answer")


def done(result: pq.abc.PGresult, pgconn: pq.abc.PGconn) -> None:
    """A setting or a statement's preparation: raised as psycopg's exception unless done, or
    prepared already on this session (by an earlier call that lost its answer)."""
    from psycopg.pq import ExecStatus

    if result.status != ExecStatus.COMMAND_OK and not _failed_with(result, PREPARED_ALREADY):
        raise error(result, pgconn)


def lost_statements(result: pq.abc.PGresult) -> bool:
    """Whether a statement failed because its session lost its prepared statements (and
    settings): a pooler's ``DISCARD ALL``. They are to be prepared again."""
    return _failed_with(result, NOT_PREPARED)


def _failed_with(result: pq.abc.PGresult, sqlstate: bytes) -> bool:
    from psycopg import pq

    failed: bool = result.status == pq.ExecStatus.FATAL_ERROR
    return failed and result.error_field(pq.DiagnosticField.SQLSTATE) == sqlstate


async def result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """The sent statement's result, once the server has finished with it (the first failure
    when there are several)."""
    from psycopg.pq import ExecStatus

    loop = asyncio.get_running_loop()
    fileno = pgconn.socket
    while pgconn.flush():
        await _ready(loop, fileno, writing=True)
    kept = None
    while True:
        # Nothing is read before the socket says so: just sent, the answer is not there yet,
        # and a read would only come back empty (a system call for nothing).
        while pgconn.is_busy():
            await _ready(loop, fileno, writing=False)
            pgconn.consume_input()
        answer = pgconn.get_result()
        if answer is None:
            break
        if kept is None or (
            answer.status == ExecStatus.FATAL_ERROR and kept.status != ExecStatus.FATAL_ERROR
        ):
            kept = answer
    if kept is None:
        raise error(pgconn.make_empty_result(ExecStatus.FATAL_ERROR), pgconn)
    return kept


async def _ready(loop: asyncio.AbstractEventLoop, fileno: int, *, writing: bool) -> None:
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    add, remove = (
        (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    )
    add(fileno, wake)
    try:
        await done
    finally:
        remove(fileno)
