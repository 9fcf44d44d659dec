"""HTTP/1.1 to one insurer: keep-alive connections on asyncio, answers read by httptools.

The portal sends one kind of request hundreds of times a second: a POST of a small SOAP
envelope to a known URL, its answer read whole up to a cap. A general client's per-call
machinery (request and response objects, header dictionaries, payload writers, its own
connector's bookkeeping) cost about as much CPU as everything else the portal does for the
call (bench/RESULTS.md), so this module does only that: the request is one ``bytes`` written
once, the answer is parsed by httptools (llhttp, the parser uvicorn serves with), and a
finished connection goes back to its insurer's idle list.

What it guarantees, each tested in ``tests/test_portal_insurer_http.py``:

* nothing is read past the cap: a declared length over it is refused before the body, the
  head is counted against its own cap as it arrives (a server that never ends its headers is
  cut), the body against the answer's, and every byte of an answer (head, chunk framing,
  body, trailers) against the two together (a trailer that never ends is cut too);
* a connection is reused only after a complete answer its server agreed to keep alive, and
  never after it has been idle for ``keepalive`` seconds (servers close idle ones at about 5);
* a call cancelled or failed mid-answer closes its connection, so a late answer can never be
  read as the next call's;
* a request on a reused connection that the server closed before answering a byte is sent
  once more on a new one (the server dropped an idle connection as the request left; it
  cannot have answered);
* nothing is taken from the environment: no proxy, no cookies, no redirects followed, no
  compression asked for;
* a host name is looked up by :mod:`portal.insurer_dns` (its own threads, one lookup per name
  at a time, answers cached), never by the event loop, whose lookups share one small pool
  among every insurer and outlive the calls that gave up on them
  (``tests/test_portal_insurer_dns.py``); the TLS server name and the certificate check, and
  the Host header, are the host name, not the address connected to.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from portal import insurer_dns

HEAD_BYTES_MAX = 64 * 1024  # status line and headers together; uvicorn's own limit is lower


class TooLarge(Exception):
    """The answer is larger than the cap."""


class BadResponse(Exception):
    """What came back is not HTTP/1.1 this client can read."""


class Dropped(ConnectionResetError):
    """The server closed the connection before its answer was complete."""

    def __init__(self, answered: bool) -> None:
        super().__init__("the server closed the connection before its answer was complete")
        self.answered = answered  # some of the answer had arrived


@dataclass(frozen=True)
class Target:
    """Where a URL's requests go, and the request line's and Host header's parts."""

    https: bool
    host: str
    port: int
    path: bytes
    authority: bytes

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)  # .port raises ValueError when malformed
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        if port != (443 if https else 80):
            shown = f"{shown}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for text in (shown, path):
            if not text.isascii() or any(c in text for c in "\r\n\t "):
                raise ValueError(f"not a URL this client sends to: {url!r}")
        return cls(https, host, port, path.encode("ascii"), shown.encode("ascii"))

    def head(self, method: bytes, extra: bytes, length: int | None) -> bytes:
        sized = b"Content-Length: %d\r\n" % length if length is not None else b""
        return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n" % (
            method,
            self.path,
            self.authority,
            extra,
            sized,
        )


@dataclass(frozen=True)
class Answer:
    status: int
    content: bytes


class Connection(asyncio.Protocol):
    """One connection; one exchange at a time (no pipelining)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # A whole head and a whole body: past that, what comes is framing or trailers no
        # answer needs, and httptools would keep copying a trailer that never ends.
        self.wire_limit = limit + HEAD_BYTES_MAX
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self._received = 0
        self._head = 0  # bytes fed while a head was incomplete (maybe a few past its end)
        self._status = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._sized = False  # a Content-Length or chunked coding: the answer ends by itself
        self._keep = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._sized and self._status >= 200:
            # An answer without a length ends where the connection does (RFC 9112 §6.3).
            waiter.set_result(Answer(self._status, b"".join(self._chunks)))
            return
        waiter.set_exception(Dropped(answered=self._received > 0))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._received += len(data)
        if not self._headers_done:
            data = self._feed_head(data)
        if not data or self.closed:
            return
        if self._received > self.wire_limit:
            self._fail(TooLarge())
            return
        self._feed(data)

    def _feed_head(self, data: bytes) -> bytes:
        """Feed ``data`` while a head is incomplete; returns what is left once it has ended.

        At most what is left of the head's cap goes to the parser until the head ends, so body
        bytes that arrive in the same read as the head are never counted as head, whatever the
        read sizes."""
        while data and not self.closed and not self._headers_done:
            room = HEAD_BYTES_MAX - self._head
            if room <= 0:
                self._fail(BadResponse(f"answer head longer than {HEAD_BYTES_MAX} bytes"))
                return b""
            piece, data = data[:room], data[room:]
            self._head += len(piece)  # counted over interim answers too: all of them are head
            self._feed(piece)
        return data

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"not an HTTP answer: {exc}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            self._sized = True
            if value.strip().isdigit() and int(value) > self.limit:
                self._fail(TooLarge())
        elif lowered == b"transfer-encoding":
            self._sized = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.closed:
            return
        self._size += len(body)
        if self._size > self.limit:
            self._fail(TooLarge())
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._status < 200:  # an interim answer (100 Continue, 103): the real one follows
            received, head = self._received, self._head
            self._reset()
            # Still one answer to the caps: endless interim answers are cut like a long head.
            self._received, self._head = received, head
            return
        self._keep = self._parser.should_keep_alive()
        waiter.set_result(Answer(self._status, b"".join(self._chunks)))

    # the exchange

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    async def exchange(self, request: bytes) -> Answer:
        assert self.transport is not None and self._waiter is None
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(request)
            return await self._waiter
        finally:
            self._waiter = None

    @property
    def keep(self) -> bool:
        """Fit for another request: its last answer was complete and kept alive."""
        return self._keep and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # nothing of ours is left to send; no lingering close


class Origin:
    """The idle connections to one insurer's URL."""

    def __init__(
        self,
        url: str,
        context: ssl.SSLContext | None,
        limit: int,
        keepalive: float,
        resolver: insurer_dns.Resolver | None = None,
    ) -> None:
        self.target = Target.of(url)
        self.resolver = resolver  # None: the process's shared one
        self.context = context if self.target.https else None
        self.limit = limit
        self.keepalive = keepalive
        self.closed = False
        self._idle: deque[Connection] = deque()

    async def request(self, method: bytes, extra: bytes, body: bytes | None) -> Answer:
        """One exchange. ``extra`` is header lines, each ending in CRLF."""
        message = self.target.head(method, extra, None if body is None else len(body))
        if body:
            message += body
        connection = self._reusable()
        if connection is not None:
            try:
                return await self._exchange(connection, message)
            except Dropped as exc:
                if exc.answered:
                    raise
                # Closed by the server as the request left, and unanswered: once more, anew.
        return await self._exchange(await self.connect(), message)

    async def _exchange(self, connection: Connection, message: bytes) -> Answer:
        done = False
        try:
            answer = await connection.exchange(message)
            done = True
            return answer
        finally:
            if done and connection.keep and not self.closed:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()

    def _reusable(self) -> Connection | None:
        oldest = time.monotonic() - self.keepalive
        while self._idle and self._idle[0].idle_since < oldest:
            self._idle.popleft().close()
        while self._idle:
            connection = self._idle.pop()  # the most recent: the least likely to be dropped
            if not connection.closed:
                return connection
        return None

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        target = self.target
        resolver = self.resolver if self.resolver is not None else insurer_dns.shared
        addresses = await resolver.resolve(target.host)
        errors: list[OSError] = []
        # Each address in turn, as the loop itself would. Given an IP literal and SOCK_STREAM
        # the loop converts it without a lookup (uvloop's sock_connect would not: it asks
        # libuv's pool even for an address, so a socket of our own cannot be used here).
        for family, address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: Connection(self.limit),
                    address,
                    target.port,
                    family=family,
                    ssl=self.context,
                    server_hostname=target.host if self.context is not None else None,
                )
                return connection
            except ssl.SSLError:
                raise  # the server's answer, not the address's: another would answer the same
            except OSError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        # One error for all, of their kind when they agree (refused, timed out): what the call's
        # outcome is named after.
        kinds = {type(e) for e in errors}
        kind = kinds.pop() if len(kinds) == 1 else OSError
        raise kind(f"no address of {target.host} connects: " + "; ".join(map(str, errors)))

    def close(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self.closed = True
        while self._idle:
            self._idle.pop().close()


async def fetch(
    url: str,
    context: ssl.SSLContext | None,
    limit: int,
    extra: bytes,
    resolver: insurer_dns.Resolver | None = None,
) -> Answer:
    """One GET on a connection of its own, closed after."""
    origin = Origin(url, context, limit, keepalive=0.0, resolver=resolver)
    connection = await origin.connect()
    try:
        return await connection.exchange(origin.target.head(b"GET", extra, None))
    finally:
        connection.close()
