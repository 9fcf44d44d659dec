"""``olv soap serve`` drops half-sent requests (slowloris) in bounded time and answers
verifications meanwhile; a slow but moving body is read to the end and answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import loopback
from tests.helpers.soap import codes_of, envelope, post, request_xml, response_element, soap_server

HEADER_SECONDS = 2
BODY_IDLE_SECONDS = 2
HALF_HEADS = 300
HALF_BODIES = 30
PATH = "/iicmva/00200809"


@pytest.fixture
def soap(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    env = {
        "OLV_DATABASE_URL": loopback.copied_database(sqlite_template, tmp_path),
        "OLV_SOAP_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
        "OLV_SOAP_BODY_IDLE_SECONDS": str(BODY_IDLE_SECONDS),
    }
    with soap_server(env, tmp_path) as server:
        yield server.base


def _verify(base: str) -> str:
    answer = post(f"{base}{PATH}", envelope(request_xml("00200809")))
    assert answer.status_code == 200, answer.text
    return codes_of(response_element(answer))[0]


def test_half_sent_requests_are_dropped_and_verifications_answered(soap: str) -> None:
    body = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        "Content-Length: 1000\r\n\r\n<s:Envelope "
    ).encode()

    def answer() -> None:
        # The store is empty: the policy is unknown, but the request is read and answered.
        assert _verify(soap) == "Unconfirmed"

    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\n"
    with loopback.half_sent(soap, head, body, HALF_HEADS, HALF_BODIES) as held:
        loopback.assert_all_dropped(held, HEADER_SECONDS + BODY_IDLE_SECONDS + 20, answer)


def test_a_body_that_keeps_moving_is_read_to_the_end(soap: str) -> None:
    body = envelope(request_xml("00200809"))
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock = loopback.connect(soap)
    try:
        sock.sendall(head)
        pieces = 3
        step = -(-len(body) // pieces)
        for offset in range(0, len(body), step):
            sock.sendall(body[offset : offset + step])
            time.sleep(BODY_IDLE_SECONDS * 0.6)  # longer than the limit in all, never idle past it
        sock.settimeout(15)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    assert received.startswith(b"HTTP/1.1 200 "), received[:300]
    assert b"<tns:ResponseCode>Unconfirmed</tns:ResponseCode>" in received, received[-600:]
