"""Asking insurers: one pooled async HTTP client per insurer, behind a small transport seam.

* :class:`Transport` is the seam: ``post`` one SOAP envelope to one insurer within a timeout,
  return the HTTP status and body, or raise :class:`CallFailed`. :class:`PooledTransport` is
  the real one; :class:`MemoryTransport` answers from a function (unit tests of the routing).
* :class:`InsurerClient` builds the request in the insurer's version, calls the transport and
  reads the answer (:mod:`portal.soap_wire`) into a :class:`CallResult` — it never raises for
  anything an insurer does. It reports what happened; which answers leave the insurer
  unavailable for a query is decided by :mod:`portal.verdicts`.

A slow insurer never slows the others: each has its own connection pool and its own cap on
calls in flight (``OLV_PORTAL_INSURER_CONCURRENCY``), and every wait — for a slot, a
connection, the answer — is bounded by the time left in the query's budget. A batch never takes
all of an insurer's slots: ``OLV_PORTAL_REALTIME_SLOTS`` of them are kept for real-time queries
(an officer at the roadside), and batch calls share the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from olv import request_id
from olv.iicmva import SOAP_ACTION
from portal import insurer_http, soap_wire
from portal.registry import InsurerInput
from portal.settings import PortalSettings

__all__ = [
    "OUTCOMES",
    "CallFailed",
    "CallResult",
    "PooledTransport",
    "InsurerClient",
    "InsurerConfig",
    "MemoryTransport",
    "Reply",
    "Transport",
]

# How a call ended, as far as the wire tells. Every outcome but "ok" makes the insurer
# unavailable for that query; portal.verdicts also relabels some "ok" answers (SYSU, UREQ).
OUTCOMES = (
    "ok",  # a schema-valid answer
    "timeout",  # no answer within the time left (also: no free slot or connection in time)
    "refused",  # connection refused, reset or closed
    "tls",  # the TLS handshake failed (certificate, CA, protocol)
    "http_error",  # an HTTP status other than 200 without a SOAP fault
    "fault",  # a SOAP fault
    "invalid",  # not XML, not the expected answer, or not valid against our XSD
    "cancelled",  # not needed any more: another insurer confirmed first
)
KEEPALIVE_SECONDS = 4.0  # under the 5 s idle limit common in servers (uvicorn's, nginx's)


# The client calls an insurer with its registration as stored: one type for both.
InsurerConfig = InsurerInput


@dataclass(frozen=True)
class Reply:
    status: int
    content: bytes


class CallFailed(Exception):
    """The transport got no usable HTTP answer; ``kind`` is timeout, refused, tls, or invalid
    (an answer over the size cap)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Transport(Protocol):
    async def post(
        self, insurer: InsurerConfig, body: bytes, timeout: float, *, batch: bool = False
    ) -> Reply: ...

    async def get(self, insurer: InsurerConfig, url: str, timeout: float) -> Reply: ...

    async def aclose(self) -> None: ...


def ssl_context(insurer: InsurerConfig) -> ssl.SSLContext:
    """Verify the insurer against its CA bundle (else the system's); present our certificate."""
    context = ssl.create_default_context(cafile=insurer.ca_bundle or None)
    if insurer.client_cert:
        context.load_cert_chain(insurer.client_cert, insurer.client_key or None)
    return context


@dataclass(frozen=True)
class _Pool:
    """One insurer's connections and slots, for the registration they were made for."""

    insurer: InsurerConfig
    origin: insurer_http.Origin
    context: ssl.SSLContext
    slots: asyncio.Semaphore
    batch_slots: asyncio.Semaphore


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _failure(exc: BaseException) -> CallFailed:
    """What a transport exception means, from its whole chain (the TLS layer's own errors
    may come wrapped)."""
    if isinstance(exc, insurer_http.TooLarge):
        return CallFailed("invalid", f"answer larger than {soap_wire.MAX_ANSWER_BYTES} bytes")
    if isinstance(exc, insurer_http.BadResponse):
        return CallFailed("invalid", str(exc))
    chain = _chain(exc)
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain):
        return CallFailed("tls", type(exc).__name__)
    if any(isinstance(e, TimeoutError) for e in chain):
        return CallFailed("timeout", "no answer in time")
    return CallFailed("refused", type(exc).__name__)


_HEADERS = b"Content-Type: text/xml; charset=utf-8\r\nSOAPAction: %s\r\n" % SOAP_ACTION.encode()
_GET_HEADERS = b"Accept: */*\r\nConnection: close\r\n"
_ERRORS = (
    TimeoutError,
    OSError,
    ssl.SSLError,
    ValueError,
    insurer_http.TooLarge,
    insurer_http.BadResponse,
)


def _id_header() -> bytes:
    """The id of the request this call is made for, so the insurer's log can name it."""
    rid = request_id.current.get()
    if rid is None or not rid.isascii() or not rid.isprintable():
        return b""
    return b"%s: %s\r\n" % (request_id.HEADER.encode("ascii"), rid.encode("ascii"))


class PooledTransport:
    """One pool of keep-alive connections (:mod:`portal.insurer_http`) and one in-flight cap
    per insurer.

    Not a general HTTP client: at 32 calls in flight, httpx took about four times the CPU per
    call of aiohttp, and aiohttp's own request machinery as much again as the rest of the
    portal's work on the call (bench/RESULTS.md), and the portal is CPU-bound. Nothing is
    taken from the environment (proxies, netrc), no cookies are kept, redirects are not
    followed and answers are not decompressed: an insurer's answer is read as sent, up to the
    size cap.
    """

    def __init__(self, concurrency: int, realtime_slots: int = 0) -> None:
        self.concurrency = concurrency
        self.batch_slots = max(1, concurrency - realtime_slots)
        self._pools: dict[str, _Pool] = {}

    def _pool(self, insurer: InsurerConfig) -> _Pool:
        known = self._pools.get(insurer.naic)
        if known is not None and known.insurer == insurer:
            return known
        try:
            context = ssl_context(insurer)
        except (OSError, ssl.SSLError) as exc:
            # Files registered once and since removed or broken: this insurer cannot be asked.
            raise CallFailed("tls", f"client certificate or CA bundle unusable: {exc}") from None
        try:
            origin = insurer_http.Origin(
                insurer.url, context, soap_wire.MAX_ANSWER_BYTES, KEEPALIVE_SECONDS
            )
        except ValueError as exc:
            raise CallFailed("refused", str(exc)) from None
        if known is not None:  # re-registered with other settings: a fresh pool
            known.origin.close()
        pool = _Pool(
            insurer,
            origin,
            context,
            asyncio.Semaphore(self.concurrency),
            asyncio.Semaphore(self.batch_slots),
        )
        self._pools[insurer.naic] = pool
        return pool

    async def post(
        self, insurer: InsurerConfig, body: bytes, timeout: float, *, batch: bool = False
    ) -> Reply:
        pool = self._pool(insurer)  # may raise CallFailed
        # A batch call holds a batch slot as well as a slot: batches together never hold more
        # than batch_slots, so the rest stay free for real-time queries.
        share = pool.batch_slots if batch else contextlib.nullcontext()
        try:
            # The query's own deadline bounds the wait for a slot, the connect, the send
            # and the read.
            async with asyncio.timeout(timeout), share, pool.slots:
                answer = await pool.origin.request(b"POST", _HEADERS + _id_header(), body)
        except _ERRORS as exc:
            raise _failure(exc) from None
        return Reply(answer.status, answer.content)

    async def get(self, insurer: InsurerConfig, url: str, timeout: float) -> Reply:
        pool = self._pool(insurer)
        try:
            async with asyncio.timeout(timeout), pool.slots:
                answer = await insurer_http.fetch(
                    url, pool.context, soap_wire.MAX_ANSWER_BYTES, _GET_HEADERS + _id_header()
                )
        except _ERRORS as exc:
            raise _failure(exc) from None
        return Reply(answer.status, answer.content)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.origin.close()
        self._pools.clear()


Handler = Callable[[InsurerConfig, bytes], Awaitable[Reply]]


class MemoryTransport:
    """Answers from ``handler(insurer, request_body)``; it may raise :class:`CallFailed`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, bytes]] = []

    async def post(
        self, insurer: InsurerConfig, body: bytes, timeout: float, *, batch: bool = False
    ) -> Reply:
        self.requests.append((insurer.naic, body))
        try:
            async with asyncio.timeout(timeout):
                return await self.handler(insurer, body)
        except TimeoutError:
            raise CallFailed("timeout", "no answer in time") from None

    async def get(self, insurer: InsurerConfig, url: str, timeout: float) -> Reply:
        return Reply(200, b"<definitions/>")

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class CallResult:
    """One call to one insurer, whatever happened."""

    naic: str
    outcome: str
    latency_ms: float
    answer: soap_wire.Answer | None = None
    detail: str = ""


class InsurerClient:
    """Verifies with insurers through a :class:`Transport` (the real one unless given)."""

    def __init__(self, transport: Transport | None, settings: PortalSettings) -> None:
        self.transport: Transport = transport or PooledTransport(
            settings.insurer_concurrency, settings.realtime_slots
        )

    async def verify(
        self, insurer: InsurerConfig, ask: soap_wire.Ask, timeout: float, *, batch: bool = False
    ) -> CallResult:
        """Ask within ``timeout`` seconds (also capped by the insurer's own timeout); a
        ``batch`` call waits for the batches' share of the insurer's slots."""
        request = soap_wire.build_request(ask, insurer.version)
        return await self.exchange(insurer, request, timeout, batch=batch, asked=ask)

    async def exchange(
        self,
        insurer: InsurerConfig,
        body: bytes,
        timeout: float,
        *,
        batch: bool = False,
        asked: soap_wire.Ask | None = None,
    ) -> CallResult:
        """Send a prepared request envelope (the onboarding test sends odd ones); with
        ``asked``, an answer about another vehicle or insurer is invalid."""
        if insurer.timeout_seconds:
            timeout = min(timeout, insurer.timeout_seconds)
        started = time.perf_counter()

        def result(
            outcome: str, answer: soap_wire.Answer | None = None, detail: str = ""
        ) -> CallResult:
            elapsed = (time.perf_counter() - started) * 1000
            return CallResult(insurer.naic, outcome, round(elapsed, 2), answer, detail)

        if timeout <= 0:
            return result("timeout", detail="no time left in the budget")
        try:
            reply = await self.transport.post(insurer, body, timeout, batch=batch)
        except CallFailed as exc:
            return result(exc.kind, detail=str(exc))
        if reply.status not in (200, 500):
            return result("http_error", detail=f"HTTP {reply.status}")
        try:
            answer = soap_wire.parse_answer(reply.content, insurer.version, asked)
        except soap_wire.BadAnswer as exc:
            kind = exc.kind if reply.status == 200 or exc.kind == "fault" else "http_error"
            return result(kind, detail=str(exc))
        if reply.status != 200:
            return result("http_error", detail=f"HTTP {reply.status} with an answer")
        return result("ok", answer)

    async def aclose(self) -> None:
        await self.transport.aclose()
