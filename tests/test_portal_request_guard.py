"""What every request meets before the portal's app (portal/guard.py, portal/headers.py): input
that lies or is huge, forwarding headers, caches. The first tests use the app in-process; the
ones about sockets and forwarding run a real ``olv portal serve``."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from olv import db
from olv.config import Settings
from portal.app import create_app
from portal.insurer_client import InsurerConfig, MemoryTransport, Reply
from portal.models import SecurityLog
from portal.settings import PortalSettings
from tests.helpers import loopback
from tests.helpers.portal import add_user, answer, portal_server
from tests.test_portal_error_shape import assert_shape, bearer


async def confirmed(_: InsurerConfig, __: bytes) -> Reply:
    return Reply(200, answer("00200809", "Confirmed"))


@pytest.fixture
def api(db_url: str) -> Iterator[tuple[TestClient, str]]:
    engine = db.make_engine(db_url)
    token = add_user(engine, "admin1", "admin")  # may verify, batch and read the history
    engine.dispose()
    app = create_app(
        Settings(database_url=db_url), PortalSettings(), transport=MemoryTransport(confirmed)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, token


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"vin": "1HGCM826\u000033A004352"}, "vin"),  # PostgreSQL text cannot hold a NUL
        ({"plate": "ABC\u0001"}, "plate"),
        (
            {"vin": "1HGCM82633A004352", "naic": "10001", "policy_number": "P\u00011"},
            "policy_number",
        ),
        ({"vin": "1HGCM82633A\u009b004352"}, "vin"),  # a C1 control
    ],
)
def test_control_characters_are_invalid_input_and_the_log_goes_on(api, body, field) -> None:
    client, token = api
    assert_shape(client.post("/api/v1/verify", json=body, headers=bearer(token)), 422, field)
    batch = {"items": [{"vin": "1HGCM82633A004352"}, body]}
    assert_shape(
        client.post("/api/v1/verify/batch", json=batch, headers=bearer(token)),
        422,
        f"items.1.{field}",
    )
    # The query log still takes and gives back queries afterwards.
    asked = client.post("/api/v1/verify", json={"vin": "1HGCM82633A004352"}, headers=bearer(token))
    # (no insurer is registered: a broadcast to nobody, logged like any answer)
    assert asked.status_code == 200, asked.text
    query_id = asked.json()["query_id"]
    back = client.get(f"/api/v1/queries/{query_id}", headers=bearer(token))
    assert back.status_code == 200, back.text
    assert (back.json()["vin"], back.json()["verdict"]) == ("1HGCM82633A004352", "unconfirmed")


def test_a_nul_in_the_address_or_a_form_is_refused(api) -> None:
    client, token = api
    assert_shape(client.get("/api/v1/queries/%00", headers=bearer(token)), 422, "url")
    assert_shape(client.get("/history.json?vin=A%00B", headers=bearer(token)), 422, "url")
    login = client.post(
        "/login",
        content=b"username=admin%00&password=x",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "http://testserver",
        },
    )
    assert_shape(login, 422, "form")


def test_a_chunked_body_over_the_cap_is_413(api) -> None:
    client, token = api

    def chunks() -> Iterator[bytes]:  # no Content-Length: the guard counts what arrives
        yield b'{"vin": "'
        for _ in range(40):
            yield b"X" * 64 * 1024
        yield b'"}'

    response = client.post(
        "/api/v1/verify",
        content=chunks(),
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert_shape(response, 413)


def test_a_page_form_over_its_cap_is_413_before_it_is_read(api) -> None:
    client, _ = api
    response = client.post(
        "/login",
        data={"username": "x" * 100_000, "password": "y"},
        headers={"Origin": "http://testserver"},
    )
    assert_shape(response, 413)


def test_answers_are_not_stored_by_caches_but_the_style_sheet_may_be(api) -> None:
    client, token = api
    answers = [
        client.post("/api/v1/verify", json={"vin": "1HGCM82633A004352"}, headers=bearer(token)),
        client.get("/api/v1/queries/" + "0" * 32, headers=bearer(token)),
        client.post("/api/v1/verify", json={"vin": ""}, headers=bearer(token)),
        client.get("/history.json", headers=bearer(token)),
        client.get("/login"),
    ]
    for response in answers:
        assert response.headers.get("cache-control") == "no-store", response.request.url
    style = client.get("/static/portal.css")
    assert style.status_code == 200 and "no-store" not in style.headers.get("cache-control", "")


# --- a real server: sockets and forwarding -----------------------------------------------------


@pytest.fixture(scope="module")
def running(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One portal for the module's socket tests: each only asks, under users of its own."""
    engine = db.make_engine(module_db_url)
    add_user(engine, "liaison1", "insurer", "10001")
    engine.dispose()
    folder = tmp_path_factory.mktemp("portal")
    with portal_server({"OLV_DATABASE_URL": module_db_url}, folder) as portal:
        yield portal


def raw_request(base: str, head: bytes, body: bytes = b"", wait: float = 5.0) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize(("path", "size"), [("/bob/upload", 300_000_000), ("/batch", 1_500_000)])
def test_an_anonymous_upload_is_refused_before_its_body_is_read(running, path, size) -> None:
    """The client announces a body within the page's cap and sends none of it: the answer
    comes at once, without waiting for the body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nSec-Fetch-Site: same-origin\r\n\r\n"
    ).encode()
    started = time.monotonic()
    received = raw_request(running.base, head, b"--b\r\n", wait=5.0)
    assert received.startswith(b"HTTP/1.1 401"), received[:200]
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(("path", "size"), [("/bob/upload", 390_000_000), ("/batch", 1_500_000)])
@pytest.mark.parametrize("role", ["officer", "court"])
def test_a_role_that_may_not_upload_is_refused_before_its_body_is_read(
    running, module_db_url: str, path: str, size: int, role: str
) -> None:
    """A signed-in user whose role may not use the page announces a large body and sends
    almost none of it: 403 comes at once, the server never waits for the rest."""
    engine = db.make_engine(module_db_url)
    token = add_user(engine, f"{role}-{path.strip('/').replace('/', '-')}", role)
    engine.dispose()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nSec-Fetch-Site: same-origin\r\n\r\n"
    ).encode()
    started = time.monotonic()
    received = raw_request(running.base, head, b"--b\r\n", wait=5.0)
    assert received.startswith(b"HTTP/1.1 403"), received[:200]
    assert time.monotonic() - started < 3


def test_an_upload_larger_than_its_page_allows_is_413_unread(running) -> None:
    head = (
        b"POST /batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900000000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    assert raw_request(running.base, head).startswith(b"HTTP/1.1 413")


def failed_login_source(db_url: str, base: str, headers: dict[str, str]) -> str | None:
    engine = db.make_engine(db_url)
    try:
        with db.transaction(engine) as session:
            before = session.scalar(select(SecurityLog.id).order_by(SecurityLog.id.desc()).limit(1))
        response = loopback.post(
            f"{base}/login",
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


def test_forwarding_headers_count_only_from_a_trusted_proxy(db_url: str, tmp_path: Path) -> None:
    """The security log's source address. With loopback trusted (the default), the entry the
    proxy wrote counts and the client's own claims to its left never do; with loopback not
    trusted, nothing a loopback client writes counts (uvicorn's own loopback trust is off)."""
    engine = db.make_engine(db_url)
    add_user(engine, "liaison1", "insurer", "10001")
    engine.dispose()
    claims = {"X-Forwarded-For": "203.0.113.66, 198.51.100.7"}
    with portal_server({"OLV_DATABASE_URL": db_url}, tmp_path) as portal:
        assert failed_login_source(db_url, portal.base, claims) == "198.51.100.7"
        assert failed_login_source(db_url, portal.base, {"X_Forwarded_For": "192.0.2.1"}) == (
            "127.0.0.1"
        )
        disagreeing = {**claims, "X-Real-IP": "192.0.2.9"}
        assert failed_login_source(db_url, portal.base, disagreeing) is None  # unknown
    env = {"OLV_DATABASE_URL": db_url, "OLV_TRUSTED_PROXIES": "10.255.255.1/32"}
    with portal_server(env, tmp_path) as portal:
        assert failed_login_source(db_url, portal.base, claims) == "127.0.0.1"
