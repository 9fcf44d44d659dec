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
import time
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
