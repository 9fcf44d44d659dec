"""``olv portal serve`` drops half-sent requests (slowloris) in bounded time and keeps
answering normal clients meanwhile; a slow but moving body is not cut off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import loopback
from tests.helpers.portal import portal_server

HEADER_SECONDS = 2
BODY_IDLE_SECONDS = 2
HALF_HEADS = 400
HALF_BODIES = 50


@pytest.fixture
def portal(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    env = {
        "OLV_DATABASE_URL": loopback.copied_database(sqlite_template, tmp_path),
        "OLV_PORTAL_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
        "OLV_PORTAL_BODY_IDLE_SECONDS": str(BODY_IDLE_SECONDS),
    }
    with portal_server(env, tmp_path) as server:
        yield server.base


def test_half_sent_requests_are_dropped_and_a_normal_client_is_answered(portal: str) -> None:
    body = (
        b"POST /api/v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Authorization: Bearer olv_x_y\r\nContent-Length: 1000\r\n\r\n{"vin": '
    )

    def answer() -> None:
        assert loopback.get(f"{portal}/healthz", timeout=10).status_code == 200

    head = "GET /login HTTP/1.1\r\nHost: x\r\n"
    with loopback.half_sent(portal, head, body, HALF_HEADS, HALF_BODIES) as held:
        loopback.assert_all_dropped(held, HEADER_SECONDS + BODY_IDLE_SECONDS + 20, answer)


def test_a_slow_head_trickled_byte_by_byte_is_still_dropped(portal: str) -> None:
    """A client that keeps sending a byte a second never completes its head: the limit runs
    from the connection's start, not from its last byte."""
    sock = loopback.connect(portal)
    sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    closed = False
    try:
        while time.monotonic() - started < HEADER_SECONDS + 15:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.settimeout(1)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:  # dropped while a byte was in flight: a reset
                closed = True
                break
    finally:
        sock.close()
    assert closed, "a head trickled a byte a second was held past the header limit"


def test_a_body_that_keeps_moving_is_read_to_the_end(portal: str) -> None:
    """A form sent in small pieces, each within the idle limit, over more time than the limit
    itself: the connection is kept and the request answered by the sign-in page (a refusal of
    the wrong password; or 503 when the slow body has used up the query budget, which runs
    from arrival: either way the whole form was read, as the page reads it before anything)."""
    body = b"username=nobody&password=" + b"x" * 40
    head = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: same-origin\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    sock = loopback.connect(portal)
    try:
        sock.sendall(head)
        step = 24
        for offset in range(0, len(body), step):
            sock.sendall(body[offset : offset + step])
            time.sleep(BODY_IDLE_SECONDS * 0.6)  # 3 pieces: longer than the limit in all
        sock.settimeout(15)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 "), received[:100]
    status = int(received.split(b" ", 2)[1])
    assert status in (200, 303, 401, 429, 503), received[:300]
