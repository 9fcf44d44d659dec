"""A client may half-close its connection once its request is sent (``shutdown(SHUT_WR)``, as
``nc -N``, some SOAP stacks and load balancers do): both servers still answer every request
received whole, in order, then close. A connection half-closed with no request, or in the
middle of one, is closed at once without an answer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from olv.serving import http_protocol
from tests.helpers import loopback
from tests.helpers.portal import portal_server
from tests.helpers.soap import envelope, request_xml, soap_server

# Long, so that a connection closed quickly was closed for its end of file, not timed out.
HEADER_SECONDS = 20
BODY_IDLE_SECONDS = 20
# Well within the limits above: a half-closed connection must not wait for them.
CLOSED_WITHIN = 5.0
PATH = "/iicmva/00200809"


@pytest.fixture(scope="module")
def soap(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("soap-half-close")
    env = {
        "OLV_DATABASE_URL": loopback.copied_database(sqlite_template, folder),
        "OLV_SOAP_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
        "OLV_SOAP_BODY_IDLE_SECONDS": str(BODY_IDLE_SECONDS),
    }
    with soap_server(env, folder) as server:
        yield server.base


@pytest.fixture(scope="module")
def portal(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("portal-half-close")
    env = {
        "OLV_DATABASE_URL": loopback.copied_database(sqlite_template, folder),
        "OLV_PORTAL_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
        "OLV_PORTAL_BODY_IDLE_SECONDS": str(BODY_IDLE_SECONDS),
    }
    with portal_server(env, folder) as server:
        yield server.base


def _soap_request(vin: str) -> bytes:
    body = envelope(request_xml("00200809", vin=vin))
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def _half_closed(base: str, sent: bytes) -> tuple[bytes, float]:
    """What the server wrote to a connection that sent ``sent`` and then half-closed, up to
    the server's close, and how long after the half-close that close came."""
    with loopback.connect(base) as sock:
        if sent:
            sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        sock.settimeout(HEADER_SECONDS + BODY_IDLE_SECONDS + 10)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received, time.monotonic() - started


def _responses(received: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP/1.1 answers in ``received``, each whole (status, headers, body); an answer
    cut short fails the test."""
    answers = []
    rest = received
    while rest:
        head, found, rest = rest.partition(b"\r\n\r\n")
        assert found, f"an answer's head cut short: {head[:300]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 "), status_line
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            assert len(rest) >= length, f"a body cut short: {len(rest)} of {length} bytes"
            body, rest = rest[:length], rest[length:]
        else:
            assert headers.get("transfer-encoding") == "chunked", headers
            body = b""
            while True:
                size_line, found, rest = rest.partition(b"\r\n")
                assert found, "a chunked body cut short"
                size = int(size_line.split(b";")[0], 16)
                assert len(rest) >= size + 2, "a chunked body cut short"
                body, rest = body + rest[:size], rest[size + 2 :]
                if not size:
                    break
        answers.append((int(status_line.split(" ", 2)[1]), headers, body))
    return answers


def _assert_verified(answer: tuple[int, dict[str, str], bytes], vin: str) -> None:
    status, _, body = answer
    assert status == 200, body[:500]
    assert body.startswith(b"<?xml") or b"Envelope" in body[:200], body[:300]
    # The store is empty: the policy is unknown, but the request was read and answered.
    assert b"<tns:ResponseCode>Unconfirmed</tns:ResponseCode>" in body, body[-600:]
    assert vin.encode() in body, body[-600:]


# --- the SOAP service ---------------------------------------------------------------------------


def test_soap_request_then_half_close_is_answered(soap: str) -> None:
    vin = "1HGCM82633A004352"
    received, waited = _half_closed(soap, _soap_request(vin))
    answers = _responses(received)
    assert len(answers) == 1, received[:500]
    _assert_verified(answers[0], vin)
    assert waited < CLOSED_WITHIN, waited


def test_soap_pipelined_requests_then_half_close_are_all_answered_in_order(soap: str) -> None:
    vins = ["1HGCM82633A004352", "2T1BURHE0JC000001", "3VWFE21C04M000002"]
    received, waited = _half_closed(soap, b"".join(_soap_request(vin) for vin in vins))
    answers = _responses(received)
    assert len(answers) == len(vins), received[:500]
    for answer, vin in zip(answers, vins, strict=True):
        _assert_verified(answer, vin)
    assert waited < CLOSED_WITHIN, waited


def test_soap_half_close_after_part_of_a_request_closes_without_an_answer(soap: str) -> None:
    whole = _soap_request("1HGCM82633A004352")
    head_end = whole.index(b"\r\n\r\n") + 4
    for part in (whole[: head_end - 10], whole[: head_end + 40]):  # in the head, in the body
        received, waited = _half_closed(soap, part)
        assert received == b"", received[:300]
        assert waited < CLOSED_WITHIN, waited


def test_soap_half_close_with_nothing_sent_closes(soap: str) -> None:
    received, waited = _half_closed(soap, b"")
    assert received == b""
    assert waited < CLOSED_WITHIN, waited


def test_soap_whole_request_then_part_of_one_then_half_close(soap: str) -> None:
    """The whole request is answered; the one cut short is not."""
    vin = "1HGCM82633A004352"
    second = _soap_request("2T1BURHE0JC000001")
    received, waited = _half_closed(soap, _soap_request(vin) + second[: len(second) - 30])
    answers = _responses(received)
    assert len(answers) == 1, received[:500]
    _assert_verified(answers[0], vin)
    assert waited < CLOSED_WITHIN, waited


# --- the portal --------------------------------------------------------------------------------


def test_portal_requests_then_half_close_are_answered(portal: str) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    received, waited = _half_closed(portal, request)
    answers = _responses(received)
    assert [status for status, _, _ in answers] == [200], received[:500]
    assert waited < CLOSED_WITHIN, waited

    page = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    received, waited = _half_closed(portal, request + page)
    answers = _responses(received)
    assert [status for status, _, _ in answers] == [200, 200], received[:500]
    assert b"<form" in answers[1][2], answers[1][2][:500]
    assert waited < CLOSED_WITHIN, waited


def test_portal_half_close_in_a_head_closes_without_an_answer(portal: str) -> None:
    received, waited = _half_closed(portal, b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A")
    assert received == b""
    assert waited < CLOSED_WITHIN, waited


# --- an answer slower than the read limits -------------------------------------------------------

SLOW_SECONDS = 1.5
SHORT_LIMIT = 0.5  # head and body limits, shorter than the answer takes


async def _slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await loopback.read_body(receive)
    await asyncio.sleep(SLOW_SECONDS)
    await loopback.answer(send, scope["path"].encode())


def test_answers_slower_than_the_read_limits_still_come_after_a_half_close() -> None:
    """Nothing more is read after the end of file: the read limits do not cut answers still
    being made, nor does the part of a request after the whole ones."""
    protocol = http_protocol(SHORT_LIMIT, SHORT_LIMIT)
    with loopback.uvicorn_in_thread(_slow_app, protocol) as port:
        base = f"http://127.0.0.1:{port}"
        sent = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /th"
        received, waited = _half_closed(base, sent)
    answers = _responses(received)
    assert [(status, body) for status, _, body in answers] == [(200, b"/one"), (200, b"/two")]
    assert 2 * SLOW_SECONDS * 0.9 <= waited < 2 * SLOW_SECONDS + CLOSED_WITHIN, waited


BLOCK_SECONDS = 0.6


async def _answer_then_block(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await loopback.answer_ok(scope, receive, send)
    if scope["type"] != "http":
        return
    # Holds the loop, so the client's end of file is read in the turn that wrote the answer,
    # while the answer is still held for the turn's end (olv.response_write).
    time.sleep(BLOCK_SECONDS)


def test_an_answer_held_in_the_turn_of_the_end_of_file_still_leaves() -> None:
    protocol = http_protocol(5.0, 5.0)
    with (
        loopback.uvicorn_in_thread(_answer_then_block, protocol) as port,
        loopback.connect(f"http://127.0.0.1:{port}") as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(BLOCK_SECONDS / 3)  # the answer is written, the loop held
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    answers = _responses(received)
    assert [(status, body) for status, _, body in answers] == [(200, b"ok")], received
