"""HTTP calls from the tests: httpx's own functions, with one TLS context for them all.

httpx builds an SSL context for every client it makes, so for every ``httpx.get`` and
``httpx.post``, and loading the CA certificates into it takes about 25 ms of CPU: the tests'
thousands of calls to servers on loopback spent minutes of a two-core machine on contexts
they never use. ``TLS`` is httpx's default context, built once; pass it as ``verify`` to any
client made without a ``verify`` of its own.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

TLS = httpx.create_ssl_context()


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=TLS, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=TLS, **kwargs)


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=TLS, **kwargs)


def closed_within(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """Waits until the server has closed each socket (end of file or reset), at most
    ``seconds``; returns the ones still open."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    open_ = set(socks)
    deadline = time.monotonic() + seconds
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data:
                selector.unregister(sock)
                open_.discard(sock)  # type: ignore[arg-type]
    selector.close()
    return list(open_)


def connect(base: str) -> socket.socket:
    """A plain TCP connection to the server at ``base`` (``http://host:port``)."""
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def copied_database(template: Path, folder: Path) -> str:
    """The URL of a copy, in ``folder``, of the migrated SQLite ``template``."""
    database = folder / "olv.db"
    database.write_bytes(template.read_bytes())
    return f"sqlite:///{database}"


@contextmanager
def half_sent(
    base: str, head: str, body: bytes, heads: int, bodies: int
) -> Iterator[list[socket.socket]]:
    """Connections holding requests that never complete (slowloris), closed on the way out:
    ``heads`` whose head never ends (``head``, then a header line left open; one more line now
    and then would not help), and ``bodies`` that declare a body and send only ``body``, the
    request's head and the body's first bytes."""
    held = []
    try:
        for number in range(heads):
            sock = connect(base)
            sock.sendall(f"{head}X-Slow-{number}: ".encode())
            held.append(sock)
        for _ in range(bodies):
            sock = connect(base)
            sock.sendall(body)
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def assert_all_dropped(
    held: list[socket.socket], seconds: float, answer: Callable[[], None]
) -> None:
    """The server closes every connection of ``held`` within ``seconds``, and ``answer`` (a
    normal request) is answered meanwhile and after."""
    started = time.monotonic()
    answer()
    still_open = closed_within(held, seconds)
    waited = time.monotonic() - started
    assert not still_open, f"{len(still_open)} half-sent requests still held after {waited:.0f} s"
    answer()


async def read_body(receive: Any) -> None:
    """An ASGI request's whole body read (and dropped)."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def answer(send: Any, body: bytes = b"ok") -> None:
    """A 200 ASGI answer of ``body``."""
    length = str(len(body)).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
    )
    await send({"type": "http.response.body", "body": body})


async def answer_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that reads a request's whole body and answers 200 ``ok``."""
    if scope["type"] == "http":
        await read_body(receive)
        await answer(send)


@contextmanager
def uvicorn_in_thread(app: Any, http: Any, **config: Any) -> Iterator[int]:
    """``app`` served by uvicorn with the protocol class ``http`` (and more of uvicorn's
    ``config``) on a loopback port (yielded) in a thread of this process, stopped on the way
    out."""
    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, http=http, log_level="warning", lifespan="off", **config)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
