"""The real insurer transport against a real (raw socket) HTTP server that sends its answer in
pieces: a schema-valid answer that trickles in is read whole, and one that grows past the cap
is refused without reading on."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from olv.iicmva import V0809
from portal import soap_wire
from portal.insurer_client import InsurerClient, InsurerConfig
from portal.settings import PortalSettings
from tests.helpers import raw_http
from tests.helpers.portal import answer


@contextmanager
def trickling_insurer(body: bytes, pieces: int, pause: float) -> Iterator[tuple[str, list[int]]]:
    """Answers each request with ``body`` in chunked transfer encoding, ``pieces`` chunks
    ``pause`` seconds apart; records how many body bytes it managed to send."""
    listener = socket.create_server(("127.0.0.1", 0))
    sent: list[int] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, rest = request.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            size = -(-len(body) // pieces)
            total = 0
            try:
                for at in range(0, len(body), size):
                    piece = body[at : at + size]
                    conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    total += len(piece)
                    time.sleep(pause)
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the client stopped reading: that is the point of the cap
            sent.append(total)

    raw_http.accept_on_thread(listener, serve)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/iicmva/00200809", sent
    finally:
        listener.close()


def call(url: str, timeout: float = 5.0) -> object:
    async def run() -> object:
        client = InsurerClient(None, PortalSettings())
        try:
            insurer = InsurerConfig("10001", "Trickle", url, V0809)
            return await client.exchange(insurer, b"<x/>", timeout)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_an_answer_sent_in_pieces_is_read_whole() -> None:
    body = answer(V0809, "Confirmed")
    with trickling_insurer(body, pieces=6, pause=0.05) as (url, _):
        result = call(url)
    assert result.outcome == "ok", result  # type: ignore[attr-defined]
    assert result.answer.response_code == "Confirmed"  # type: ignore[attr-defined]


def test_an_answer_growing_past_the_cap_is_refused_without_reading_on() -> None:
    cap = soap_wire.MAX_ANSWER_BYTES
    body = b"<x>" + b"A" * (cap * 4) + b"</x>"
    with trickling_insurer(body, pieces=64, pause=0.01) as (url, sent):
        result = call(url)
        deadline = time.monotonic() + 5
        while not sent and time.monotonic() < deadline:
            time.sleep(0.05)
    assert result.outcome == "invalid" and "larger than" in result.detail  # type: ignore[attr-defined]
    assert sent and sent[0] < len(body)  # the transfer was cut, not read to the end
