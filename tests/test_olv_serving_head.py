"""The servers' protocol (:func:`olv.serving.http_protocol`) against what a request head can
lie about, on a real uvicorn:

- a head over ``MAX_HEAD_BYTES`` (one long line, sent a piece at a time) or with more than
  ``MAX_HEADER_FIELDS`` fields gets a 400 and the connection closes, while other connections
  are answered: httptools and uvicorn build long values by concatenation, and a 5-MB head held
  a worker's event loop for seconds;
- trailer fields after a chunked body are dropped, never added to the request's headers (an
  API key or a certificate subject sent as a trailer passed for one a proxy had checked);
- each request is stamped with the moment its head was whole, so that a request pipelined
  behind a slow one counts its wait against its deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from olv.serving import MAX_HEAD_BYTES, MAX_HEADER_FIELDS, RECEIVED, http_protocol
from tests.helpers import loopback

SLOW_PATH = "/slow"
SLOW_SECONDS = 1.0


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request's headers and the wait from its stamp to this call, once the
    body is in; ``/slow`` takes ``SLOW_SECONDS`` first."""
    started = time.monotonic()
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == SLOW_PATH:
        await asyncio.sleep(SLOW_SECONDS)
    body = json.dumps(
        {
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "waited": started - scope["state"][RECEIVED],
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with loopback.uvicorn_in_thread(_echo, http_protocol(10.0, 10.0)) as port:
        yield f"http://127.0.0.1:{port}"


def _exchange(base: str, *parts: bytes, pause: float = 0.0) -> bytes:
    """Everything the server writes after ``parts`` are sent (``pause`` between them), up to
    its close or a 5-s silence."""
    with loopback.connect(base) as sock:
        sock.settimeout(5)
        try:
            for part in parts:
                sock.sendall(part)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-send: what it wrote before is still there to read
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def _answers(raw: bytes) -> list[dict[str, Any]]:
    found = []
    for piece in raw.split(b"HTTP/1.1 ")[1:]:
        head, _, rest = piece.partition(b"\r\n\r\n")
        assert head.startswith(b"200"), piece[:200]
        found.append(json.loads(rest[: rest.index(b"}") + 1] if b"}" in rest else rest))
    return found


def test_a_long_header_line_sent_in_pieces_gets_400_and_a_close(base: str) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
    pieces = [head] + [b"a" * 4096] * (2 * MAX_HEAD_BYTES // 4096)
    raw = _exchange(base, *pieces, pause=0.001)
    assert raw.startswith(b"HTTP/1.1 400"), raw[:100]
    assert b"head too large" in raw.lower() or b"invalid http request" in raw.lower()
    # Another connection is answered meanwhile and after.
    assert _answers(_exchange(base, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))


def test_a_head_under_the_cap_passes_however_it_is_split(base: str) -> None:
    """Each byte counts once: a 40-KB head sent 1 KB at a time is as good as in one piece."""
    fields = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    head = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n"
    assert len(head) < MAX_HEAD_BYTES
    pieces = [head[i : i + 1024] for i in range(0, len(head), 1024)]
    [answer] = _answers(_exchange(base, *pieces, pause=0.002))
    assert len(answer["headers"]) == 42


def test_too_many_header_fields_get_400(base: str) -> None:
    fields = b"".join(b"X-A: b\r\n" for _ in range(MAX_HEADER_FIELDS + 1))
    raw = _exchange(base, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert raw.startswith(b"HTTP/1.1 400"), raw[:100]
    # As many as the limit allows are fine.
    fields = b"".join(b"X-A: b\r\n" for _ in range(MAX_HEADER_FIELDS - 2))
    [answer] = _answers(
        _exchange(base, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n")
    )
    assert len(answer["headers"]) == MAX_HEADER_FIELDS


def test_trailer_fields_never_join_the_headers(base: str) -> None:
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n4\r\nbody\r\n0\r\nX-API-Key: secretkey1\r\n"
        b"X-SSL-Client-S-DN: CN=dmv.example.gov\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
    )
    [answer] = _answers(_exchange(base, request))
    names = {name for name, _ in answer["headers"]}
    assert names == {"host", "transfer-encoding", "connection"}, names


def test_a_pipelined_request_counts_its_wait_behind_the_one_before(base: str) -> None:
    slow = f"GET {SLOW_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    quick = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    first, second = _answers(_exchange(base, slow + quick))
    assert first["waited"] < SLOW_SECONDS / 2
    # Its head was whole when both arrived; the application saw it only after the first answer.
    assert second["waited"] >= SLOW_SECONDS * 0.9, second["waited"]
