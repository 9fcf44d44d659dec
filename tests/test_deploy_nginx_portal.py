"""The shipped nginx file in front of a real ``olv portal serve``: TLS with HSTS, forwarding
headers written by nginx alone, body caps, unbuffered uploads and half-sent requests dropped.

nginx runs from ``deploy/nginx/olv-portal.conf`` itself, with only the addresses, ports and
certificate paths replaced; the certificate comes from a throw-away CA. Skips (with the reason)
when no nginx binary is installed; ``scripts/test`` installs one.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from olv import db
from portal.models import SecurityLog
from tests.helpers.free_ports import free_port
from tests.helpers.nginx import (
    PORTAL_CONF,
    cert_name,
    issue_cert,
    nginx_binary,
    portal_swaps,
    render,
    running_nginx,
)
from tests.helpers.portal import add_user, portal_server

SPOOFED = "203.0.113.66"


@dataclass
class Front:
    base: str
    port: int
    folder: Path
    db_url: str

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.folder / "ca.crt"))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, verify=self.context(), timeout=10)

    def raw(self) -> ssl.SSLSocket:
        """A TLS connection to nginx on which the test writes bytes itself."""
        plain = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return self.context().wrap_socket(plain, server_hostname="127.0.0.1")


@pytest.fixture(scope="module")
def front(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    nginx_binary()
    folder = tmp_path_factory.mktemp("nginx-portal")
    database = folder / "olv.db"
    shutil.copy(sqlite_template, database)
    url = f"sqlite:///{database}"
    engine = db.make_engine(url)
    add_user(engine, "liaison1", "insurer", "10001")
    engine.dispose()
    ca = issue_cert(folder, "ca", cert_name("Test State CA"), None)
    issue_cert(folder, "server", cert_name("portal.state.example"), ca, server=True)
    with portal_server({"OLV_DATABASE_URL": url}, folder) as upstream:
        port = free_port()
        upstream_port = int(upstream.base.rsplit(":", 1)[1])
        swaps = portal_swaps(folder, port, free_port(), [upstream_port])
        conf = render(PORTAL_CONF, swaps, folder)
        result = Front(f"https://127.0.0.1:{port}", port, folder, url)

        def ready() -> None:
            with result.client() as client:
                client.get("/healthz")

        with running_nginx(folder, [conf], ready):
            yield result


def test_answers_carry_hsts_over_tls(front: Front) -> None:
    with front.client() as client:
        page = client.get("/login")
    assert page.status_code == 200
    hsts = page.headers.get("strict-transport-security", "")
    assert "max-age=31536000" in hsts, page.headers


def _failed_login_source(front: Front, headers: dict[str, str]) -> str | None:
    engine = db.make_engine(front.db_url)
    try:
        with db.transaction(engine) as session:
            before = session.scalar(select(SecurityLog.id).order_by(SecurityLog.id.desc()).limit(1))
        with front.client() as client:
            response = client.post(
                "/login",
                data={"username": "liaison1", "password": "wrong-password-1"},
                headers={"Sec-Fetch-Site": "same-origin", **headers},
            )
        assert response.status_code in (200, 303, 401), response.text
        with db.transaction(engine) as session:
            row = session.scalars(
                select(SecurityLog)
                .where(SecurityLog.id > (before or 0), SecurityLog.event == "login_failed")
                .order_by(SecurityLog.id.desc())
            ).first()
            assert row is not None
            return row.source
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Forwarded-For": SPOOFED}, id="x-forwarded-for"),
        pytest.param({"X_Forwarded_For": SPOOFED}, id="x_forwarded_for"),
        pytest.param({"X-Real-IP": SPOOFED}, id="x-real-ip"),
        pytest.param({"Forwarded": f"for={SPOOFED}"}, id="forwarded"),
    ],
)
def test_a_client_cannot_name_its_own_address(front: Front, headers: dict[str, str]) -> None:
    """The security log records the address nginx saw (the test's loopback), never the claim."""
    assert _failed_login_source(front, headers) == "127.0.0.1"


def test_a_body_over_every_page_cap_is_refused_by_nginx(front: Front) -> None:
    with front.client() as client:
        response = client.post(
            "/api/v1/verify",
            content=b"x" * (1024 * 1024 + 1),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413


def _head_of_answer(sock: ssl.SSLSocket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_an_upload_reaches_the_portal_unbuffered_so_a_stranger_is_refused_unread(
    front: Front,
) -> None:
    """A stranger announces 300 MB to the upload page and sends a few bytes: the portal's 401
    comes back through nginx at once, without nginx first spooling the body."""
    head = (
        b"POST /bob/upload HTTP/1.1\r\nHost: portal.state.example\r\n"
        b"Content-Length: 300000000\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Sec-Fetch-Site: same-origin\r\n\r\n--b\r\n"
    )
    with front.raw() as sock:
        sock.settimeout(10)
        sock.sendall(head)
        answer = _head_of_answer(sock)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_a_half_sent_request_is_dropped(front: Front) -> None:
    """Part of a request head and then silence: nginx closes the connection once its header
    timeout has passed (10 s in the shipped file), and a normal client is answered meanwhile."""
    with front.raw() as sock:
        sock.settimeout(30)
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: portal.state.example\r\nX-Slow: ")
        with front.client() as client:
            assert client.get("/login").status_code == 200
        started = time.monotonic()
        try:
            rest = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            rest = b""
        waited = time.monotonic() - started
    assert not rest.startswith(b"HTTP/1.1 200"), rest[:200]
    assert waited < 25, f"the half-sent request was held {waited:.0f} s"
