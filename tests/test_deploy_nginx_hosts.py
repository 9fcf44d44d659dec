"""Several hosts behaving as one: the shipped nginx files in front of two SOAP servers and two
portals, one of each killed mid-traffic without a failed verification.

Two parts. First, which requests nginx sends to the next host: upstream "hosts" that read a
request and then drop the connection (a host dying with the request in hand) show that a
verification is tried on both hosts while a sign-in, an upload or an administration form is
tried once. Then the drill: real ``olv soap serve`` and ``olv portal serve`` processes (two
of each, on loopback ports in place of the shipped host addresses) behind one nginx running
both shipped files; the portal asks its insurer through the SOAP nginx; one SOAP server and
one portal are SIGKILLed (every process of theirs, as when a host dies) while clients keep
verifying, and every verification still comes back confirmed.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from olv import db
from tests.helpers import data
from tests.helpers.free_ports import free_port
from tests.helpers.nginx import (
    PORTAL_CONF,
    SOAP_CONF,
    cert_name,
    issue_cert,
    nginx_binary,
    portal_swaps,
    render,
    running_nginx,
    soap_swaps,
)
from tests.helpers.portal import add_insurer, add_user, load_bob, portal_server
from tests.helpers.private_pg import child_pids
from tests.helpers.raw_http import read_request
from tests.helpers.soap import codes_of, envelope, request_xml, response_element
from tests.helpers.soap import soap_server as start_soap

SOAP_BODY = envelope(request_xml("00200809"))
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nginx_binary()
    folder = tmp_path_factory.mktemp("hosts-tls")
    ca = issue_cert(folder, "ca", cert_name("Test CA"), None)
    issue_cert(folder, "server", cert_name("olv.example"), ca, server=True)
    return folder


def _tls(folder: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(folder / "ca.crt"))


# --- which requests go to the next host ----------------------------------------------------


@dataclass
class Droppers:
    """Listeners that read each request (head and body) and close without answering."""

    ports: list[int]
    seen: list[str] = field(default_factory=list)


def _request_line(conn: socket.socket) -> str:
    request = read_request(conn)
    return "" if request is None else request.split(b"\r\n", 1)[0].decode()


@contextmanager
def droppers(count: int) -> Iterator[Droppers]:
    listeners = []
    for _ in range(count):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        listeners.append(listener)
    result = Droppers([s.getsockname()[1] for s in listeners])
    stop = threading.Event()

    def serve(listener: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with suppress(OSError):
                    line = _request_line(conn)
                    if line:
                        result.seen.append(line)

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in listeners]
    for thread in threads:
        thread.start()
    try:
        yield result
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for listener in listeners:
            listener.close()


def _tcp_ready(port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        raise httpx.ConnectError(str(exc)) from exc


def _attempts(certificates: Path, tmp_path: Path, kind: str, method: str, path: str) -> int:
    """How many hosts nginx tries with one request (both hosts drop it)."""
    folder = tmp_path / "nginx"
    folder.mkdir()
    with droppers(2) as hosts:
        port = free_port()
        if kind == "soap":
            swaps = soap_swaps(certificates, port, hosts.ports)
            conf = render(SOAP_CONF, swaps, folder)
        else:
            swaps = portal_swaps(certificates, port, free_port(), hosts.ports)
            conf = render(PORTAL_CONF, swaps, folder)
        with (
            running_nginx(folder, [conf], lambda: _tcp_ready(port)),
            httpx.Client(verify=_tls(certificates), timeout=15) as client,
        ):
            response = client.request(
                method,
                f"https://127.0.0.1:{port}{path}",
                content=b'{"vin": "1HGCM82633A004352"}',
                headers={"Content-Type": "application/json"},
            )
        assert response.status_code == 502, response.text
        return len(hosts.seen)


@pytest.mark.parametrize(
    ("kind", "method", "path"),
    [
        pytest.param("soap", "POST", "/iicmva/00200809", id="soap-verification"),
        pytest.param("soap", "GET", "/iicmva/00200809?wsdl", id="soap-wsdl"),
        pytest.param("portal", "POST", "/api/v1/verify", id="api-verify"),
        pytest.param("portal", "POST", "/api/v1/verify/batch", id="api-batch"),
        pytest.param("portal", "POST", "/query", id="query-page"),
        pytest.param("portal", "POST", "/query.json", id="query-json"),
    ],
)
def test_a_verification_goes_to_the_next_host_when_one_dies_with_it(
    certificates: Path, tmp_path: Path, kind: str, method: str, path: str
) -> None:
    assert _attempts(certificates, tmp_path, kind, method, path) == 2


@pytest.mark.parametrize(
    "path",
    [
        "/login",
        "/login/totp",
        "/admin/users",
        "/admin/tokens",
        "/admin/insurers",
        "/bob/upload",
        "/batch",
        "/iies/proof",
        "/api/v1/cards/verify",
    ],
)
def test_a_write_is_never_sent_to_a_second_host(
    certificates: Path, tmp_path: Path, path: str
) -> None:
    assert _attempts(certificates, tmp_path, "portal", "POST", path) == 1


# --- the drill: two of each, one of each killed mid-traffic --------------------------------------


def _kill_host(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a server and every process it started, as when its host dies."""
    pending = [process.pid]
    family: list[int] = []
    while pending:
        parent = pending.pop()
        family.append(parent)
        pending.extend(child_pids(parent))
    for member in family:
        with suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


@dataclass
class Tally:
    ok: int = 0
    ok_after_kill: int = 0
    failures: list[str] = field(default_factory=list)
    killed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, failure: str | None) -> None:
        with self.lock:
            if failure is not None:
                self.failures.append(failure)
            else:
                self.ok += 1
                if self.killed.is_set():
                    self.ok_after_kill += 1


def _soap_once(client: httpx.Client, base: str) -> str | None:
    try:
        response = client.post(f"{base}/iicmva/00200809", content=SOAP_BODY, headers=SOAP_HEADERS)
    except httpx.HTTPError as exc:
        return f"soap: {type(exc).__name__}"
    if response.status_code != 200:
        return f"soap: HTTP {response.status_code}"
    answer = codes_of(response_element(response))
    return None if answer == ("Confirmed", []) else f"soap: {answer}"


def _portal_once(client: httpx.Client, base: str, token: str) -> str | None:
    try:
        response = client.post(
            f"{base}/api/v1/verify",
            json={"vin": data.VIN_OK},
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError as exc:
        return f"portal: {type(exc).__name__}"
    if response.status_code != 200:
        return f"portal: HTTP {response.status_code} {response.text[:200]}"
    verdict = response.json()["verdict"]
    return None if verdict == "confirmed" else f"portal: {verdict}"


def test_one_soap_server_and_one_portal_die_mid_traffic_and_no_verification_fails(
    module_db_url: str, certificates: Path, tmp_path: Path
) -> None:
    folder = tmp_path
    data.load_policies(module_db_url, folder)
    soap_port, portal_port = free_port(), free_port()
    soap_base = f"https://127.0.0.1:{soap_port}"
    portal_base = f"https://127.0.0.1:{portal_port}"
    engine = db.make_engine(module_db_url)
    try:
        # The state asks its insurer through the insurer's nginx, as in production.
        add_insurer(
            engine,
            data.NAIC,
            f"{soap_base}/iicmva/00200809",
            ca_bundle=str(certificates / "ca.crt"),
        )
        load_bob(engine, folder, [(data.NAIC, "P-OK", data.VIN_OK)])
        token = add_user(engine, "officer1", "officer")
    finally:
        engine.dispose()
    env = {"OLV_DATABASE_URL": module_db_url}
    with (
        start_soap(env, folder) as soap_a,
        start_soap(env, folder) as soap_b,
        portal_server(env, folder) as portal_a,
        portal_server(env, folder) as portal_b,
    ):
        ports = [int(s.base.rsplit(":", 1)[1]) for s in (soap_a, soap_b, portal_a, portal_b)]
        confs = [
            render(SOAP_CONF, soap_swaps(certificates, soap_port, ports[:2]), folder),
            render(
                PORTAL_CONF, portal_swaps(certificates, portal_port, free_port(), ports[2:]), folder
            ),
        ]

        def ready() -> None:
            with httpx.Client(verify=_tls(certificates), timeout=2) as client:
                client.get(f"{portal_base}/healthz")
                client.get(f"{soap_base}/iicmva/00200809?wsdl")

        with running_nginx(folder, confs, ready) as nginx:
            tally = Tally()
            stop = threading.Event()

            def soap_client() -> None:
                with httpx.Client(verify=_tls(certificates), timeout=10) as client:
                    while not stop.is_set():
                        tally.record(_soap_once(client, soap_base))

            def portal_client() -> None:
                with httpx.Client(verify=_tls(certificates), timeout=10) as client:
                    while not stop.is_set():
                        tally.record(_portal_once(client, portal_base, token))

            with ThreadPoolExecutor(6) as pool:
                futures = [pool.submit(soap_client) for _ in range(3)]
                futures += [pool.submit(portal_client) for _ in range(3)]
                try:
                    deadline = time.monotonic() + 60
                    while tally.ok < 60 and time.monotonic() < deadline and not tally.failures:
                        time.sleep(0.05)
                    tally.killed.set()
                    _kill_host(soap_a.process)
                    _kill_host(portal_a.process)
                    deadline = time.monotonic() + 60
                    while tally.ok_after_kill < 200 and time.monotonic() < deadline:
                        time.sleep(0.05)
                finally:
                    stop.set()
                for future in futures:
                    future.result()
            assert soap_a.process.wait(10) == -signal.SIGKILL
            assert portal_a.process.wait(10) == -signal.SIGKILL
            assert tally.failures == [], (tally.failures[:10], nginx.error_log()[-3000:])
            assert tally.ok_after_kill >= 200, tally
            # nginx did meet the dead hosts (and went on to the live ones).
            log = nginx.error_log()
            assert f"127.0.0.1:{ports[0]}" in log and f"127.0.0.1:{ports[2]}" in log, log
