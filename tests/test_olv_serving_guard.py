"""olv.serving.guarded_http keeps one read timer per connection and moves it only when it
would fire too late: after a long body phase, the next request's head is still held to the
(shorter) head limit, counted from its first byte."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from olv.serving import BODY_ALLOWANCE, guarded_http
from tests.helpers import loopback

HEAD_SECONDS = 1.0
BODY_IDLE_SECONDS = 4.0


@pytest.fixture
def base() -> Iterator[str]:
    with loopback.uvicorn_in_thread(
        loopback.answer_ok, guarded_http(HEAD_SECONDS, BODY_IDLE_SECONDS)
    ) as port:
        yield f"http://127.0.0.1:{port}"


def _answer(sock: Any) -> bytes:
    data = b""
    while not data.endswith(b"ok"):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed before the answer"
        data += chunk
    return data


def test_after_a_slow_body_the_next_head_keeps_its_own_limit(base: str) -> None:
    with loopback.connect(base) as sock:
        # A body that takes longer than the head limit, moving within the body limit:
        # the connection's timer fires inside it and is set for the body's limit.
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        for piece in (b"a", b"b", b"c"):
            time.sleep(HEAD_SECONDS * 0.7)
            sock.sendall(piece)
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")
        # The next request's head never ends: dropped at the head limit, not at the
        # body limit the timer was last set for.
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.settimeout(BODY_IDLE_SECONDS + 5)
        assert sock.recv(1024) == b""
        waited = time.monotonic() - started
    assert HEAD_SECONDS * 0.9 <= waited < HEAD_SECONDS + 1.0, waited


def test_requests_that_come_in_time_are_all_answered_on_one_connection(base: str) -> None:
    with loopback.connect(base) as sock:
        ends = time.monotonic() + HEAD_SECONDS * 2.5  # across several of the timer's turns
        answered = 0
        while time.monotonic() < ends:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _answer(sock).startswith(b"HTTP/1.1 200 ")
            answered += 1
            time.sleep(0.05)
    assert answered >= 20


def test_a_body_dripped_within_the_idle_limit_is_dropped_at_the_least_rate(base: str) -> None:
    """One byte at a time, each well within the idle limit: the body falls behind
    MIN_BODY_RATE at once, so the connection goes when its allowance is spent."""
    with loopback.connect(base) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n")
        started = time.monotonic()
        sock.settimeout(0.05)
        closed = False
        while time.monotonic() - started < BODY_IDLE_SECONDS * (BODY_ALLOWANCE + 2):
            try:
                sock.sendall(b"a")
                closed = sock.recv(1024) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
            if closed:
                break
            time.sleep(BODY_IDLE_SECONDS / 8)
        waited = time.monotonic() - started
    assert closed, "a dripped body held the connection"
    allowance = BODY_ALLOWANCE * BODY_IDLE_SECONDS
    assert allowance * 0.9 <= waited < allowance + 2.0, waited


def test_a_body_at_a_real_clients_pace_is_read_to_the_end(base: str) -> None:
    """Past the idle allowance, a body that keeps coming at the least rate is still read."""
    size = 8000
    with loopback.connect(base) as sock:
        sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        started = time.monotonic()
        sent = 0
        # 1,000 bytes every 1.5 s (667 bytes/s), 12 s in all: past the allowance of 8 s.
        while sent < size:
            sock.sendall(b"b" * 1000)
            sent += 1000
            time.sleep(1.5)
        assert time.monotonic() - started > BODY_ALLOWANCE * BODY_IDLE_SECONDS
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")


def test_requests_read_far_ahead_of_their_answers_end_the_connection(base: str) -> None:
    from olv.serving import MAX_PIPELINED

    with loopback.connect(base) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
        received = b""
        while received.count(b"HTTP/1.1 200 ") < 10:
            received += sock.recv(65536)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * (MAX_PIPELINED * 3))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert b"HTTP/1.1 400 " in received
    assert received.count(b"HTTP/1.1 200 ") <= MAX_PIPELINED + 1
