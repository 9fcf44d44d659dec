"""A kept-alive connection whose next request arrived while the server's event loop was busy
reading is answered, not closed for idleness. When the keep-alive timer comes due during a
long turn of the loop's read callbacks (a burst of new connections, say), uvloop runs due
timers before it polls for what arrived meanwhile: uvicorn's handler closed the connection with the request
unread, and the client, which had sent it well within the keep-alive time, got a read error
and no answer (seen under a sign-in flood)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from olv.serving import http_protocol
from tests.helpers import loopback

KEEP_ALIVE_SECONDS = 1.0
BUSY_SECONDS = 2.5  # the loop is held past the first connection's keep-alive time
SENT_AFTER = 0.3  # the next request goes out this long after the answer: well within it


class _SlowReading(http_protocol(header_seconds=10, body_idle_seconds=10)):  # type: ignore[misc]
    def data_received(self, data: bytes) -> None:
        if data.startswith(b"GET /busy "):
            time.sleep(BUSY_SECONDS)  # a read callback that holds the loop
        super().data_received(data)


@pytest.fixture
def base() -> Iterator[str]:
    with loopback.uvicorn_in_thread(
        loopback.answer_ok, _SlowReading, loop="uvloop", timeout_keep_alive=KEEP_ALIVE_SECONDS
    ) as port:
        yield f"http://127.0.0.1:{port}"


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"ok"):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        assert chunk, f"the connection closed with no answer (got {data!r})"
        data += chunk
    return data


def test_a_request_that_arrived_while_the_loop_was_busy_is_answered(base: str) -> None:
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with loopback.connect(base) as kept, loopback.connect(base) as other:
        kept.sendall(get)
        assert _answer(kept).startswith(b"HTTP/1.1 200 ")
        answered = time.monotonic()
        # Another connection's request holds the loop; meanwhile the kept connection sends
        # its next request, long before its keep-alive time is up.
        other.sendall(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
        busy = threading.Thread(target=_answer, args=(other,))
        busy.start()
        time.sleep(max(0.0, answered + SENT_AFTER - time.monotonic()))
        kept.sendall(get)
        busy.join(BUSY_SECONDS + 5)
        assert _answer(kept).startswith(b"HTTP/1.1 200 ")


def test_an_idle_kept_alive_connection_is_still_closed(base: str) -> None:
    with loopback.connect(base) as kept:
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer(kept).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        kept.settimeout(KEEP_ALIVE_SECONDS + 5)
        assert kept.recv(100) == b""
        waited = time.monotonic() - started
        assert KEEP_ALIVE_SECONDS * 0.8 < waited < KEEP_ALIVE_SECONDS + 4, waited
