"""The insurer connections (portal/insurer_http.py) against a raw socket server that behaves as
each test scripts it: what is reused, what is refused, what is sent again, and that an answer
can never be read as another call's."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from portal import insurer_http
from portal.insurer_http import Origin
from tests.helpers import raw_http

LIMIT = 4096
Handler = Callable[[socket.socket, "Server"], None]


@dataclass
class Server:
    port: int
    requests: list[bytes] = field(default_factory=list)  # in arrival order, every connection
    connections: int = 0

    def read_request(self, conn: socket.socket) -> bytes | None:
        """One request (head and declared body), recorded; None when the client closed."""
        request = raw_http.read_request(conn)
        if request is not None:
            self.requests.append(request)
        return request


def answer(body: bytes, *headers: bytes) -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), lines, body)


def echo_forever(conn: socket.socket, server: Server) -> None:
    """Answers every request on the connection with its body, kept alive."""
    while (request := server.read_request(conn)) is not None:
        conn.sendall(answer(request.partition(b"\r\n\r\n")[2]))


@contextmanager
def scripted(*handlers: Handler) -> Iterator[Server]:
    """The n-th connection is served by ``handlers[n]`` (the last one for any after)."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = Server(listener.getsockname()[1])

    def serve(conn: socket.socket) -> None:
        handler = handlers[min(server.connections, len(handlers) - 1)]
        server.connections += 1
        # OSError: the client went away, which some tests are about.
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            handler(conn, server)

    raw_http.accept_on_thread(listener, serve)
    try:
        yield server
    finally:
        listener.close()


def origin(server: Server, keepalive: float = 30.0) -> Origin:
    return Origin(f"http://127.0.0.1:{server.port}/soap?x=1", None, LIMIT, keepalive)


def post(target: Origin, body: bytes, timeout: float = 5.0) -> insurer_http.Answer:
    async def run() -> insurer_http.Answer:
        try:
            async with asyncio.timeout(timeout):
                return await target.request(b"POST", b"X-Test: 1\r\n", body)
        finally:
            target.close()

    return asyncio.run(run())


def posts(target: Origin, bodies: list[bytes], pause: float = 0.0) -> list[object]:
    """The bodies posted one after another in one event loop; an exception is returned."""

    async def run() -> list[object]:
        results: list[object] = []
        for body in bodies:
            try:
                async with asyncio.timeout(2):
                    results.append(await target.request(b"POST", b"", body))
            except Exception as exc:
                results.append(exc)
            await asyncio.sleep(pause)
        target.close()
        return results

    return asyncio.run(run())


def test_the_request_is_one_http_11_post_with_its_headers() -> None:
    with scripted(echo_forever) as server:
        got = post(origin(server), b"<x/>")
    assert got == insurer_http.Answer(200, b"<x/>")
    head = server.requests[0].partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /soap?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in head
    assert b"X-Test: 1" in head and b"Content-Length: 4" in head


def test_a_kept_alive_connection_is_reused_and_a_closed_one_is_not() -> None:
    with scripted(echo_forever) as server:
        results = posts(origin(server), [b"1", b"2", b"3"])
    assert [r.content for r in results] == [b"1", b"2", b"3"]  # type: ignore[attr-defined]
    assert server.connections == 1

    def answer_then_close(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(answer(b"bye", b"Connection: close"))

    with scripted(answer_then_close) as server:
        results = posts(origin(server), [b"1", b"2"])
    assert [r.content for r in results] == [b"bye", b"bye"]  # type: ignore[attr-defined]
    assert server.connections == 2


def test_an_idle_connection_is_not_reused_after_the_keepalive() -> None:
    with scripted(echo_forever) as server:
        results = posts(origin(server, keepalive=0.2), [b"1", b"2"], pause=0.4)
    assert [r.content for r in results] == [b"1", b"2"]  # type: ignore[attr-defined]
    assert server.connections == 2


def test_a_declared_length_over_the_cap_is_refused_before_the_body() -> None:
    sent_body = threading.Event()

    def huge(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (LIMIT * 100))
        time.sleep(3)  # the body would come only now
        conn.sendall(b"A" * LIMIT)
        sent_body.set()

    with scripted(huge) as server:
        started = time.monotonic()
        with pytest.raises(insurer_http.TooLarge):
            post(origin(server), b"q")
    assert time.monotonic() - started < 2 and not sent_body.is_set()


def test_an_answer_growing_past_the_cap_and_an_endless_head_are_cut() -> None:
    def chunked(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"400\r\n" + b"B" * 1024 + b"\r\n")
            time.sleep(0.005)

    with scripted(chunked) as server, pytest.raises(insurer_http.TooLarge):
        post(origin(server), b"q")

    def endless_head(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for n in range(10_000):
            conn.sendall(b"X-Filler-%d: %s\r\n" % (n, b"f" * 100))

    with scripted(endless_head) as server, pytest.raises(insurer_http.BadResponse) as raised:
        post(origin(server), b"q")
    assert "head longer than" in str(raised.value)


def test_a_trailer_that_never_ends_is_cut_at_the_answer_cap_without_holding_the_loop() -> None:
    """A chunked answer whose body ends at once, then a trailer field without end: httptools
    would keep copying it (the whole event loop held, memory growing) until the deadline."""
    sent = [0]

    def endless_trailer(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        time.sleep(0.1)  # the head is read on its own: the head's cap is not what cuts this
        conn.sendall(b"5\r\n<a/>\n\r\n0\r\nX-Trailer: ")
        while sent[0] < 16 * 1024 * 1024:
            conn.sendall(b"a" * 65536)
            sent[0] += 65536
        conn.recv(1)  # then hold the connection open: only the client can end the call

    async def run(target: Origin) -> tuple[object, float]:
        gaps = [0.0]

        async def tick() -> None:
            while True:
                last = time.monotonic()
                await asyncio.sleep(0.01)
                gaps[0] = max(gaps[0], time.monotonic() - last)

        ticker = asyncio.create_task(tick())
        try:
            async with asyncio.timeout(5):
                result: object = await target.request(b"POST", b"", b"q")
        except Exception as exc:
            result = exc
        finally:
            ticker.cancel()
            target.close()
        return result, gaps[0]

    with scripted(endless_trailer) as server:
        started = time.monotonic()
        result, gap = asyncio.run(run(origin(server)))
        elapsed = time.monotonic() - started
    assert isinstance(result, insurer_http.TooLarge), result
    assert elapsed < 2 and gap < 0.5
    # Cut at the cap (head and body caps together), not megabytes later.
    assert sent[0] <= 4 * 1024 * 1024


def _read_whole(port: int, limit: int) -> object:
    """One exchange on a real loopback connection whose answer is read in one piece: the event
    loop is held until the server has sent all of it, into a receive buffer big enough."""

    async def run() -> object:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: insurer_http.Connection(limit), sock=sock
        )
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nq"
        exchanged = asyncio.ensure_future(connection.exchange(request))
        await asyncio.sleep(0)  # the request is written
        time.sleep(0.5)  # holds the loop: nothing is read until the whole answer is here
        try:
            async with asyncio.timeout(5):
                return await exchanged
        except Exception as exc:
            return exc
        finally:
            connection.close()

    return asyncio.run(run())


@pytest.mark.parametrize("head_bytes", [0, 60_000])
def test_an_answer_over_the_head_cap_is_read_whole_whatever_the_read_sizes(
    head_bytes: int,
) -> None:
    """Body bytes read along with the head are not head: a 150 KB answer (under the answer
    cap) with a head of up to the head cap is read, even when one read holds all of it."""
    body = b"<a>" + b" " * 150_000 + b"</a>"
    filler = b"X-Filler: " + b"f" * head_bytes if head_bytes else b"X-Filler: f"
    whole = answer(body, filler)

    def at_once(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(whole)
        conn.recv(1)

    with scripted(at_once) as server:
        got = _read_whole(server.port, 256 * 1024)
    assert got == insurer_http.Answer(200, body), got

    def head_too_long(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(answer(body, b"X-Filler: " + b"f" * insurer_http.HEAD_BYTES_MAX))
        conn.recv(1)

    with scripted(head_too_long) as server:
        refused = _read_whole(server.port, 256 * 1024)
    assert isinstance(refused, insurer_http.BadResponse) and "head longer" in str(refused)


def test_what_is_not_http_is_refused() -> None:
    def garbage(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"<html>busy</html>\r\n\r\n")

    with scripted(garbage) as server, pytest.raises(insurer_http.BadResponse):
        post(origin(server), b"q")


def test_an_answer_without_a_length_ends_with_its_connection() -> None:
    def until_close(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        time.sleep(0.05)
        conn.sendall(b"part two")

    with scripted(until_close) as server:
        got = post(origin(server), b"q")
    assert got == insurer_http.Answer(200, b"part one, part two")


def test_an_interim_answer_is_passed_over() -> None:
    def interim(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.sendall(answer(b"real"))

    with scripted(interim) as server:
        assert post(origin(server), b"q") == insurer_http.Answer(200, b"real")


def test_a_call_cut_mid_answer_never_hands_its_answer_to_the_next() -> None:
    """The first call's answer comes after its deadline, while the second call, on the same
    origin, waits: the second must get its own answer, on a new connection."""

    def slow_then_echo(conn: socket.socket, server: Server) -> None:
        request = server.read_request(conn)
        assert request is not None
        time.sleep(0.6)
        conn.sendall(answer(b"late answer to " + request.partition(b"\r\n\r\n")[2]))
        echo_forever(conn, server)

    async def run(target: Origin) -> tuple[object, object]:
        try:
            async with asyncio.timeout(0.2):
                first: object = await target.request(b"POST", b"", b"first")
        except TimeoutError as exc:
            first = exc
        async with asyncio.timeout(2):  # asked before the late answer comes
            second = await target.request(b"POST", b"", b"second")
        target.close()
        return first, second

    with scripted(slow_then_echo, echo_forever) as server:
        first, second = asyncio.run(run(origin(server)))
    assert isinstance(first, TimeoutError)
    assert second == insurer_http.Answer(200, b"second")
    assert server.connections == 2


def test_a_reused_connection_dropped_unanswered_is_asked_again_once_on_a_new_one() -> None:
    def answer_once_then_drop(conn: socket.socket, server: Server) -> None:
        request = server.read_request(conn)
        assert request is not None
        conn.sendall(answer(b"one"))
        server.read_request(conn)  # the next request arrives as the server drops the connection

    with scripted(answer_once_then_drop, echo_forever) as server:
        results = posts(origin(server), [b"1", b"2"])
    assert [getattr(r, "content", r) for r in results] == [b"one", b"2"]
    assert server.connections == 2
    assert [r.partition(b"\r\n\r\n")[2] for r in server.requests] == [b"1", b"2", b"2"]


def test_a_new_connection_dropped_or_half_answered_is_not_asked_again() -> None:
    def drop(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)

    with scripted(drop) as server:
        (result,) = posts(origin(server), [b"1"])
    assert isinstance(result, insurer_http.Dropped) and not result.answered
    assert server.connections == 1

    def answer_once_then_half(conn: socket.socket, server: Server) -> None:
        server.read_request(conn)
        conn.sendall(answer(b"one"))
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly part")

    with scripted(answer_once_then_half, echo_forever) as server:
        results = posts(origin(server), [b"1", b"2"])
    assert getattr(results[0], "content", None) == b"one"
    assert isinstance(results[1], insurer_http.Dropped) and results[1].answered
    assert server.connections == 1


@pytest.mark.parametrize(
    "url",
    ["ftp://host/x", "http:///x", "http://host:99999/x", "http://host/a b", "http://hôst/x"],
)
def test_a_url_this_client_cannot_send_to_is_refused_up_front(url: str) -> None:
    with pytest.raises(ValueError):
        Origin(url, None, LIMIT, 1.0)


def test_the_host_header_of_an_ipv6_address_and_a_default_port() -> None:
    target = insurer_http.Target.of("https://[::1]/iicmva")
    assert (target.host, target.port, target.authority, target.path) == (
        "::1",
        443,
        b"[::1]",
        b"/iicmva",
    )
    assert insurer_http.Target.of("http://insurer.example:8080").authority == (
        b"insurer.example:8080"
    )
