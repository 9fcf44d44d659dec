"""Insurer host names (portal/insurer_dns.py): one insurer whose name never resolves leaves the
others answering, a name has one lookup in flight, answers are cached (and a former answer
serves while lookups hang or fail), IP literals are never looked up, and TLS still checks the
certificate against the host name.

A resolver that hangs cannot be made real on loopback, so lookups go to a fake that holds one
name until the test ends and answers 127.0.0.1 for another, handed to the resolver or, for the
portal's own path, put in place of ``socket.getaddrinfo``. The insurers are real servers on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import trustme
import uvloop

from olv.iicmva import V0809
from portal import insurer_dns, insurer_http
from portal.insurer_client import CallResult, InsurerClient, InsurerConfig
from portal.insurer_http import Origin
from portal.settings import PortalSettings
from tests.helpers import raw_http
from tests.helpers.portal import answer

T = TypeVar("T")
LIMIT = 64 * 1024
HUNG = "hung.insurer.test"
HEALTHY = "healthy.insurer.test"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {
    "asyncio": None,
    "uvloop": uvloop.new_event_loop,  # what `olv portal serve` runs on
}


class FakeDns:
    """Names in ``hung`` are held until ``release`` (then fail as a resolver that gave up);
    names in ``answers`` get their address after ``delay`` seconds; any other name does not
    exist. Every lookup is recorded in ``asked``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hung: set[str] = {HUNG}
        self.answers: dict[str, list[str]] = {HEALTHY: ["127.0.0.1"]}
        self.delay = 0.0
        self.asked: list[str] = []
        self.lock = threading.Lock()
        self._real = socket.getaddrinfo

    def __call__(self, host: str) -> list[insurer_dns.Address]:
        with self.lock:
            self.asked.append(host)
        if host in self.hung:
            self.release.wait(60)  # set when the test ends, so that the lookup thread ends too
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in self.answers:
            time.sleep(self.delay)
            return [(socket.AF_INET, address) for address in self.answers[host]]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        """In place of ``socket.getaddrinfo``: addresses go to the real one."""
        if host is None or insurer_dns.literal(str(host)) is not None:
            return self._real(host, port, *args, **kwargs)
        return [
            found
            for _, address in self(str(host))
            for found in self._real(address, port, *args, **kwargs)
        ]

    def asked_for(self, host: str) -> int:
        with self.lock:
            return self.asked.count(host)


@pytest.fixture
def dns() -> Iterator[FakeDns]:
    fake = FakeDns()
    try:
        yield fake
    finally:
        fake.release.set()


@dataclass
class Insurer:
    port: int
    heads: list[bytes] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)  # SNI, under TLS

    def url(self, host: str, scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/iicmva/00200809"


@contextmanager
def insurer(context: ssl.SSLContext | None = None) -> Iterator[Insurer]:
    """A SOAP insurer on 127.0.0.1 that confirms every request on a kept-alive connection,
    behind TLS when given a server ``context``."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = Insurer(listener.getsockname()[1])
    body = answer(V0809, "Confirmed")
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    if context is not None:
        context.sni_callback = lambda _sock, name, _context: server.server_names.append(name)

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # includes a refused handshake
            conn.settimeout(10)
            if context is not None:
                conn = context.wrap_socket(conn, server_side=True)
            with conn:
                while (request := raw_http.read_request(conn)) is not None:
                    server.heads.append(request.partition(b"\r\n\r\n")[0])
                    conn.sendall(reply)

    raw_http.accept_on_thread(listener, serve)
    try:
        yield server
    finally:
        listener.close()


def run(main: Callable[[], Awaitable[T]], loop: str = "asyncio") -> T:
    async def wrapped() -> T:
        return await main()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(wrapped())


async def post(origin: Origin, timeout: float = 2.0) -> insurer_http.Answer:
    async with asyncio.timeout(timeout):
        return await origin.request(b"POST", b"", b"<x/>")


def posted(origin: Origin, loop: str = "asyncio") -> insurer_http.Answer:
    """One call in an event loop of its own, closing the origin's connections before the loop."""

    async def main() -> insurer_http.Answer:
        try:
            return await post(origin)
        finally:
            origin.close()

    return run(main, loop)


async def timed(call: Awaitable[T]) -> tuple[T | BaseException, float]:
    started = time.monotonic()
    try:
        result: T | BaseException = await call
    except Exception as exc:
        result = exc
    return result, time.monotonic() - started


@pytest.mark.parametrize("loop", list(LOOPS))
def test_a_name_whose_lookup_hangs_leaves_the_other_insurers_answering(
    dns: FakeDns, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """Six queries to an insurer whose name never resolves are in flight when a healthy
    insurer, known by a name too, is first asked: its answers come at once. Through the real
    transport and the process's shared resolver, whose lookups go to ``socket.getaddrinfo``.

    The loop's own executor is cut to libuv's four threads, which uvloop's lookups share: a
    lookup made by the loop (the former ``create_connection(host, ...)``) waits behind four
    hung ones and the healthy insurer's calls time out with the hung insurer's."""
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    monkeypatch.setattr(insurer_dns, "shared", insurer_dns.Resolver())
    hung = InsurerConfig("20008", "DnsHung", f"http://{HUNG}:9/iicmva/00200809", V0809)

    async def main() -> tuple[list[tuple[CallResult, float]], list[tuple[CallResult, float]]]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(4))
        client = InsurerClient(None, PortalSettings())
        try:
            with insurer() as server:
                healthy = InsurerConfig("10001", "Healthy", server.url(HEALTHY), V0809)
                hung_calls = [
                    asyncio.create_task(timed(client.exchange(hung, b"<x/>", 2.0)))
                    for _ in range(6)
                ]
                await asyncio.sleep(0.3)  # every one of them is waiting for the name
                healthy_calls = await asyncio.gather(
                    *(timed(client.exchange(healthy, b"<x/>", 2.0)) for _ in range(5))
                )
                return await asyncio.gather(*hung_calls), healthy_calls
        finally:
            await client.aclose()
            dns.release.set()  # before the loop's executor is shut down

    hung_calls, healthy_calls = run(main, loop)
    assert [(r.outcome, took < 1.0) for r, took in healthy_calls] == [("ok", True)] * 5
    assert [r.outcome for r, _ in hung_calls] == ["timeout"] * 6
    assert all(1.9 < took < 3.0 for _, took in hung_calls)
    assert dns.asked_for(HUNG) == 1 and dns.asked_for(HEALTHY) == 1


def test_connects_to_a_name_share_one_lookup(dns: FakeDns) -> None:
    """Eight calls at once to a name that takes a while to resolve: one lookup, eight answers.
    Eight calls to a name that never resolves: one lookup, held across their deadlines and not
    started again by the calls after them."""
    dns.delay = 0.3
    resolver = insurer_dns.Resolver(dns)

    async def main() -> tuple[list[object], list[object], int]:
        with insurer() as server:
            origin = Origin(server.url(HEALTHY), None, LIMIT, 30.0, resolver)
            healthy = await asyncio.gather(*(post(origin) for _ in range(8)))
            origin.close()
            hung = Origin(f"http://{HUNG}/", None, LIMIT, 30.0, resolver)
            failed = await asyncio.gather(
                *(post(hung, timeout=0.3) for _ in range(8)), return_exceptions=True
            )
            more = await asyncio.gather(
                *(post(hung, timeout=0.1) for _ in range(3)), return_exceptions=True
            )
        return [*healthy], [*failed, *more], len(server.heads)

    healthy, failed, requests = run(main)
    assert [getattr(a, "status", a) for a in healthy] == [200] * 8 and requests == 8
    assert [type(e) for e in failed] == [TimeoutError] * 11
    assert dns.asked_for(HEALTHY) == 1 and dns.asked_for(HUNG) == 1
    assert resolver.in_flight() == 1  # the hung one, still held


def test_the_host_header_and_the_connection_use_the_name_and_its_address(dns: FakeDns) -> None:
    resolver = insurer_dns.Resolver(dns)
    with insurer() as server:
        origin = Origin(server.url(HEALTHY), None, LIMIT, 30.0, resolver)
        assert posted(origin) == insurer_http.Answer(200, answer(V0809, "Confirmed"))
    assert f"Host: {HEALTHY}:{server.port}".encode() in server.heads[0].split(b"\r\n")


def test_each_address_of_a_name_is_tried_in_turn(dns: FakeDns) -> None:
    """As the event loop did with a name: an address that refuses, then the next. Nothing
    listens on 127.0.0.2 (loopback too) at the insurer's port."""
    resolver = insurer_dns.Resolver(dns)
    dns.answers["two.insurer.test"] = ["127.0.0.2", "127.0.0.1"]
    dns.answers["none.insurer.test"] = ["127.0.0.2", "127.0.0.3"]
    with insurer() as server:
        origin = Origin(server.url("two.insurer.test"), None, LIMIT, 30.0, resolver)
        assert posted(origin).status == 200
        with pytest.raises(ConnectionRefusedError):
            posted(Origin(server.url("none.insurer.test"), None, LIMIT, 30.0, resolver))
    assert len(server.heads) == 1


def test_a_cached_answer_serves_while_later_lookups_hang(dns: FakeDns) -> None:
    """Every answer is stale at once (``fresh=0``): each connect starts a refresh unless one is
    in flight. The name's lookups start hanging after its first answer: calls go on at once
    with that answer, and the one hung refresh is all that is asked."""
    resolver = insurer_dns.Resolver(dns, fresh=0.0, stale=60.0)

    async def main() -> list[tuple[object, float]]:
        with insurer() as server:
            # keepalive 0: every call connects anew, so every call needs the name.
            origin = Origin(server.url(HEALTHY), None, LIMIT, 0.0, resolver)
            try:
                results = [await timed(post(origin))]
                dns.hung.add(HEALTHY)
                for _ in range(4):
                    results.append(await timed(post(origin)))
                    await asyncio.sleep(0.05)
                return results
            finally:
                origin.close()

    results = run(main)
    assert [(getattr(r, "status", r), took < 0.5) for r, took in results] == [(200, True)] * 5
    assert dns.asked_for(HEALTHY) == 2 and resolver.in_flight() == 1


def test_a_cached_answer_serves_through_failed_lookups_until_its_end(dns: FakeDns) -> None:
    """A refresh that fails keeps the former answer, and the name is not asked again for
    ``failed`` seconds; once ``stale`` seconds have passed since the answer came, it is no
    longer used."""
    resolver = insurer_dns.Resolver(dns, fresh=0.0, stale=1.5, failed=1.0)

    async def main() -> list[object]:
        with insurer() as server:
            origin = Origin(server.url(HEALTHY), None, LIMIT, 0.0, resolver)
            try:
                results: list[object] = [await post(origin)]
                del dns.answers[HEALTHY]  # from now on the name does not resolve
                for _ in range(3):  # the first starts a refresh, which fails at once
                    results.append(await post(origin))
                    await asyncio.sleep(0.02)
                asked = dns.asked_for(HEALTHY)
                await asyncio.sleep(1.6)  # past the answer's end: this call waits for a lookup
                try:
                    await post(origin)
                except insurer_dns.LookupFailed as exc:
                    results.append(exc)
                return [*results, asked]
            finally:
                origin.close()

    *results, failed, asked = run(main)
    assert [getattr(r, "status", r) for r in results] == [200] * 4
    assert asked == 2  # the first answer and one failed refresh
    assert isinstance(failed, insurer_dns.LookupFailed)
    assert str(failed) == f"name lookup of {HEALTHY} failed: Name or service not known"


def test_a_failed_lookup_is_not_asked_again_for_a_while(dns: FakeDns) -> None:
    resolver = insurer_dns.Resolver(dns, failed=1.0)
    origin = Origin("http://gone.insurer.test:8080/soap", None, LIMIT, 30.0, resolver)

    async def main() -> list[tuple[object, float]]:
        results = [await timed(post(origin)) for _ in range(3)]
        asked = dns.asked_for("gone.insurer.test")
        await asyncio.sleep(1.1)
        results.append(await timed(post(origin)))
        return [*results, (asked, 0.0)]

    *results, (asked, _) = run(main)
    assert all(isinstance(r, insurer_dns.LookupFailed) and took < 0.5 for r, took in results)
    assert asked == 1 and dns.asked_for("gone.insurer.test") == 2


def test_when_every_lookup_thread_is_held_a_new_name_fails_at_once(dns: FakeDns) -> None:
    """Two threads, both held by names that never resolve: a third name fails at once (for its
    insurer alone) rather than queue, and a name already answered still connects."""
    dns.hung |= {"hung-2.insurer.test"}
    dns.answers["new.insurer.test"] = ["127.0.0.1"]
    resolver = insurer_dns.Resolver(dns, threads=2, fresh=0.0)

    async def main() -> list[tuple[object, float]]:
        with insurer() as server:
            known = Origin(server.url(HEALTHY), None, LIMIT, 0.0, resolver)
            try:
                await post(known)  # answered, and cached
                for name in (HUNG, "hung-2.insurer.test"):
                    with contextlib.suppress(TimeoutError):
                        await post(Origin(f"http://{name}/", None, LIMIT, 0.0, resolver), 0.1)
                new = Origin(server.url("new.insurer.test"), None, LIMIT, 0.0, resolver)
                return [await timed(post(new)), await timed(post(known))]
            finally:
                known.close()

    (refused, took), (served, _) = run(main)
    assert isinstance(refused, insurer_dns.LookupFailed) and took < 0.5
    assert "every name-lookup thread is busy" in str(refused)
    assert getattr(served, "status", served) == 200
    assert resolver.in_flight() == 2 and dns.asked_for("new.insurer.test") == 0


def test_an_ip_literal_is_never_looked_up(dns: FakeDns) -> None:
    resolver = insurer_dns.Resolver(dns)
    with insurer() as server:
        origin = Origin(f"http://127.0.0.1:{server.port}/x", None, LIMIT, 30.0, resolver)
        assert posted(origin).status == 200

    async def literals() -> list[list[insurer_dns.Address]]:
        return [await resolver.resolve(host) for host in ("10.1.2.3", "::1", "fe80::1%lo")]

    assert run(literals) == [
        [(socket.AF_INET, "10.1.2.3")],
        [(socket.AF_INET6, "::1")],
        [(socket.AF_INET6, "fe80::1%lo")],
    ]
    assert dns.asked == []


@pytest.mark.parametrize("loop", list(LOOPS))
def test_tls_to_a_name_is_checked_against_that_name(dns: FakeDns, loop: str) -> None:
    """The name resolves to 127.0.0.1; the server is asked for the name (SNI) and its
    certificate must be the name's: one made out to the address connected to is refused."""
    ca = trustme.CA()
    client = ssl.create_default_context()
    ca.configure_trust(client)
    dns.answers["other.insurer.test"] = ["127.0.0.1"]
    resolver = insurer_dns.Resolver(dns)

    def server_context(name: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        return context

    with insurer(server_context(HEALTHY)) as good, insurer(server_context("127.0.0.1")) as bad:
        origin = Origin(good.url(HEALTHY, "https"), client, LIMIT, 30.0, resolver)
        assert posted(origin, loop).status == 200
        wrong = Origin(bad.url("other.insurer.test", "https"), client, LIMIT, 30.0, resolver)
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            posted(wrong, loop)
    assert good.server_names == [HEALTHY]
    assert f"Host: {HEALTHY}:{good.port}".encode() in good.heads[0].split(b"\r\n")
    assert "other.insurer.test" in str(refused.value) and bad.heads == []
