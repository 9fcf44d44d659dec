"""olv.response_write: what a connection writes in one turn of the event loop leaves in one
write at the end of that turn, never later. Checked on a real uvicorn server (both servers'
protocol) answering on a real socket, and on the transport seam directly."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from olv.response_write import HOLD_LIMIT, HeldWrites
from olv.serving import http_protocol
from tests.helpers import loopback


class Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def test_the_writes_of_one_turn_leave_in_one_write_at_its_end() -> None:
    asyncio.run(_the_writes_of_one_turn_leave_in_one_write_at_its_end())


async def _the_writes_of_one_turn_leave_in_one_write_at_its_end() -> None:
    transport = Recorder()
    held = HeldWrites(transport, asyncio.get_running_loop())
    held.write(b"HTTP/1.1 200 OK\r\n\r\n")
    held.write(bytearray(b"body"))
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    held.write(b"next")  # a later turn: its own write
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]  # nothing twice


def test_past_the_hold_limit_the_writes_leave_at_once() -> None:
    asyncio.run(_past_the_hold_limit_the_writes_leave_at_once())


async def _past_the_hold_limit_the_writes_leave_at_once() -> None:
    transport = Recorder()
    held = HeldWrites(transport, asyncio.get_running_loop())
    held.write(b"head")
    held.write(b"x" * HOLD_LIMIT)
    assert transport.writes == [b"head" + b"x" * HOLD_LIMIT]
    await asyncio.sleep(0)
    assert len(transport.writes) == 1


def test_close_sends_what_is_held_abort_drops_it_and_a_closed_socket_gets_nothing() -> None:
    asyncio.run(_close_sends_what_is_held_abort_drops_it_and_a_closed_socket_gets_nothing())


async def _close_sends_what_is_held_abort_drops_it_and_a_closed_socket_gets_nothing() -> None:
    loop = asyncio.get_running_loop()
    transport = Recorder()
    held = HeldWrites(transport, loop)
    held.write(b"head")
    held.close()
    assert transport.writes == [b"head"] and transport.closed
    aborted = Recorder()
    dropped = HeldWrites(aborted, loop)
    dropped.write(b"head")
    dropped.abort()
    await asyncio.sleep(0)
    assert aborted.writes == [] and aborted.closed
    gone = Recorder()
    gone.closed = True
    late = HeldWrites(gone, loop)
    late.write(b"head")
    await asyncio.sleep(0)
    assert gone.writes == []


async def _app(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"x-a", b"1")]
    if scope["path"] != "/stream":
        headers.append((b"content-length", b"3"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"] == "/stream":
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"two"})


@pytest.fixture
def served() -> Iterator[int]:
    with loopback.uvicorn_in_thread(_app, http_protocol(5.0, 5.0)) as port:
        yield port


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_real_server_answers_whole(served: int) -> None:
    plain = _get(served, "/")
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and b"x-a: 1\r\n" in plain
    assert plain.endswith(b"\r\n\r\ntwo")
    streamed = _get(served, "/stream")
    assert streamed.startswith(b"HTTP/1.1 200 OK\r\n")
    assert streamed.endswith(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")
