"""Helpers for the portal tests: seeding the state database, SOAP answers, odd insurers, and a
real ``olv portal serve`` subprocess."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine

from bob_loader.load import load_files
from olv import db
from olv.bob import layout
from olv.iicmva import IICMVA, SOAP11_ENV, V0510, V0809
from portal import demo as portal_demo
from portal import passwords, registry, tokens, users
from portal.ratelimit import SharedLimits
from portal.settings import KEEP_ALIVE_SECONDS
from portal.state_reads import StateReader
from service import demo as insurer_demo
from tests.helpers.soap import (
    ServerProcess,
    free_port,
    soap_server,
    start_until_healthy,
    stop_process,
)

PASSWORD = "Correct-Horse-Battery-9"
# The portal does not start without a secret key (README); tests use this one.
TEST_SECRET_KEY = "test-only portal secret key, 32 characters or more"

# For tests that send revoked or unknown tokens in a loop from one address: past the allowance
# of failed look-ups (portal.failed_lookups) they would get 429, and such a test is about the
# 401 behind that throttle.
UNTHROTTLED = {"OLV_PORTAL_FAILED_LOOKUPS_PER_MINUTE": "1000000"}
# A client that keeps idle connections as long as the portal's keep-alive (5 s, httpx's own
# default too) may send its next request on one the portal is closing: a read error with no
# answer. Clients that hammer a portal keep them for half as long.
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=KEEP_ALIVE_SECONDS / 2)


def with_secret_key(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the tests' portal key unless it names one (fixtures of a wider scope than a
    test run before the per-test environment is set)."""
    if env.get("OLV_PORTAL_SECRET_KEY") or env.get("OLV_PORTAL_SECRET_KEY_FILE"):
        return env
    return {**env, "OLV_PORTAL_SECRET_KEY": TEST_SECRET_KEY}


T = TypeVar("T")


async def with_limits(url: str, work: Callable[[SharedLimits, list[int]], Awaitable[T]]) -> T:
    """``work`` with the portal's limits on ``url``; the list counts the takes of each
    statement (PostgreSQL) or transaction (SQLite) of the gathered path, as the real methods
    are called."""
    engine = db.make_engine(url)
    reader = StateReader(engine, 5.0)
    await reader.open()
    statements: list[int] = []
    on_primary, in_thread = reader.rows_on_primary, reader.takes

    async def counted(sql: str, params: Any) -> Any:
        statements.append(len(params["keys"]))
        return await on_primary(sql, params)

    async def hopped(sql: str, params: Any, vins: Any, seconds: float) -> Any:
        statements.append(len(params))
        return await in_thread(sql, params, vins, seconds)

    reader.rows_on_primary = counted  # type: ignore[method-assign]
    reader.takes = hopped  # type: ignore[method-assign]
    try:
        return await work(SharedLimits(reader), statements)
    finally:
        await reader.close()
        engine.dispose()


def write_bob(path: Path, rows: list[tuple[str, str, str]], effective: str = "20240101") -> Path:
    """A BoB file with one VS record per (naic, policy number, vin)."""
    lines = [
        layout.format_record(
            {
                "policy_type": "VS",
                "naic": naic,
                "policy_number": policy,
                "effective_date": effective,
                "vin": vin,
            }
        )
        for naic, policy, vin in rows
    ]
    path.write_bytes("".join(line + "\r\n" for line in lines).encode("ascii"))
    return path


def load_bob(engine: Engine, folder: Path, rows: list[tuple[str, str, str]]) -> None:
    path = write_bob(folder / f"State {len(rows)} 20261101.txt", rows)
    outcomes = load_files(engine, [path], report_dir=folder)
    assert all(o.status == "accepted" for o in outcomes), outcomes


def add_insurer(engine: Engine, naic: str, url: str, version: str = V0809, **extra: object) -> None:
    data = registry.InsurerInput(
        naic=naic,
        name=f"Insurer {naic}",
        url=url,
        version=version,
        **extra,  # type: ignore[arg-type]
    )
    with db.transaction(engine) as session:
        registry.upsert(session, data)


@cache
def _password_hash() -> str:
    # argon2id is slow on purpose; one hash serves every test user.
    return passwords.hash_password(PASSWORD)


def add_user(engine: Engine, username: str, role: str, naic: str | None = None) -> str:
    """A user (password ``PASSWORD``) with an API token; returns the token."""
    users.check_role(role, naic)
    with db.transaction(engine) as session:
        session.add(users.new_user(username, role, naic, _password_hash()))
    with db.transaction(engine) as session:
        _, token = tokens.create(session, username, 30)
    return token


def add_registration(engine: Engine, plate: str, state: str, vin: str) -> None:
    from portal.models import Registration

    with db.transaction(engine) as session:
        session.add(Registration(plate=plate, state=state, vin=vin))


@contextmanager
def demo_world(url: str, folder: Path) -> Iterator[Engine]:
    """The demo's world on database ``url``: the insurer store, a real SOAP service on it, and
    the portal's data seeded by the demo's own code (insurers registered, BoB loaded, plates).
    Yields the engine while the SOAP service runs."""
    today = datetime.now(UTC).date()
    engine = db.make_engine(url)
    try:
        insurer_demo.load(engine, today)
        with soap_server({"OLV_DATABASE_URL": url}, folder) as soap:
            bob = insurer_demo.export_bob(engine, today, folder)
            portal_demo.seed(engine, soap.base, insurer_demo.DEMO_NAIC, folder, [bob])
            yield engine
    finally:
        engine.dispose()


# --- SOAP answers ------------------------------------------------------------------------------


def answer(version: str, code: str, reasons: tuple[str, ...] = (), naic: str = "10001") -> bytes:
    """A schema-valid answer envelope of ``version``."""
    root = "CoverageResponseDocument" if version == V0809 else "CoverageResponse"
    attrs = (
        ' PublicationVersion="00200809" PublicationDate="2008-09-01"' if version == V0809 else ""
    )
    key = "PolicyKey" if version == V0809 else "UniqueKey"
    codes = "".join(f"<UnconfirmedReasonCode>{r}</UnconfirmedReasonCode>" for r in reasons)
    body = (
        f'<{root} xmlns="{IICMVA}"{attrs}><Detail><PolicyInformation><CoverageStatus>'
        f"<ResponseDetails><ResponseCode>{code}</ResponseCode>{codes}</ResponseDetails>"
        f"</CoverageStatus><OrganizationDetails><NAIC>{naic}</NAIC></OrganizationDetails>"
        f"<PolicyDetails><VerificationDate>{date.today().isoformat()}T00:00:00</VerificationDate>"
        f"<{key}>X</{key}><PolicyState>ID</PolicyState></PolicyDetails>"
        f"</PolicyInformation></Detail></{root}>"
    )
    return f'<s:Envelope xmlns:s="{SOAP11_ENV}"><s:Body>{body}</s:Body></s:Envelope>'.encode()


def fault() -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP11_ENV}"><s:Body><s:Fault><faultcode>s:Server</faultcode>'
        "<faultstring>boom</faultstring></s:Fault></s:Body></s:Envelope>"
    ).encode()


__all__ = ["V0510", "V0809"]


# --- insurers that misbehave ----------------------------------------------------------------


@contextmanager
def hung_insurer() -> Iterator[str]:
    """A socket that accepts connections and never answers; yields its URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/iicmva/00200809"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def refusing_insurer() -> Iterator[str]:
    """A URL whose connections are refused: the port is bound, so nothing else (a server of a
    test running beside this one) can take it meanwhile, but never listened on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{holder.getsockname()[1]}/iicmva/00200809"
    finally:
        holder.close()


@contextmanager
def canned_insurer(status: int, body: bytes) -> Iterator[str]:
    """An HTTP server that answers every request with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = _reply  # noqa: N815
        do_GET = _reply  # noqa: N815

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/iicmva/00200809"
    finally:
        server.shutdown()
        server.server_close()


# --- a real portal process -----------------------------------------------------------------------


@dataclass
class Portal:
    base: str
    process: ServerProcess
    log: Path

    def stop(self) -> int:
        return stop_process(self.process)


@contextmanager
def portal_server(env: dict[str, str], log_dir: Path, prewarm: bool = True) -> Iterator[Portal]:
    """``olv portal serve`` in a subprocess, ready when /healthz answers."""
    port = free_port()
    log = log_dir / f"portal-{port}.log"
    command = [sys.executable, "-m", "olv", "portal", "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    process = start_until_healthy(
        command, with_secret_key({**os.environ, **env}), log, base, "portal", prewarm
    )
    portal = Portal(base, process, log)
    try:
        yield portal
    finally:
        portal.stop()


@contextmanager
def two_portals(url: str, folder: Path, **env: str) -> Iterator[tuple[Portal, Portal]]:
    """Two ``olv portal serve`` processes on database ``url``, started one after the other."""
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(portal_server({"OLV_DATABASE_URL": url, **env}, folder))
            for _ in range(2)
        )
        yield first, second
