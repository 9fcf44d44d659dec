"""SOAP POSTs answered from the HTTP protocol's own callbacks, without a task per request.

uvicorn runs every request as an asyncio task around the ASGI application: the task, its
coroutine's steps, an event to wake it, the receive and send messages and their checks. For a
request that is itself a fraction of a millisecond of CPU that machinery is a large share
(bench/RESULTS.md). A POST is answered here instead, by the same steps
(:meth:`service.asgi.AsgiSoap.begin` and :meth:`~service.asgi.AsgiSoap.complete`): they run in
the parser's callback once the body is whole, the database part joins the turn's batch
(:mod:`service.coalesce`) under the same deadline, and the answer is written from the batch's
callback. Each request runs in a copy of the context, as a task would, so its request id stays
its own.

uvicorn's own path, unchanged, takes everything else: other methods (``GET ?wsdl``, ``HEAD``),
the probes, a request that expects ``100-continue``, and one that arrives while the
connection's output is paused, so that a peer that does not read its answers is held back as
uvicorn holds it (one answer at most is written past the transport's high-water mark).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any, NamedTuple

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from service import probes
from service.asgi import AsgiSoap, Reply, declared_oversized
from service.coverage import Decision

log = logging.getLogger(__name__)

_SERVER_ERROR = Reply(
    500,
    [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
    b"Internal Server Error",
)


class _Pending(NamedTuple):
    cycle: RequestResponseCycle
    environ: dict[str, Any]
    context: contextvars.Context


def direct_soap(protocol: type[HttpToolsProtocol]) -> type[HttpToolsProtocol]:
    """``protocol`` answering the SOAP application's POSTs without a task each."""

    class DirectSoapProtocol(protocol):  # type: ignore[valid-type,misc]
        _soap: AsgiSoap | None = None
        _pending: _Pending | None = None  # the request read whole or in part, not answered

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # Anything wrapped around the application (a middleware) keeps uvicorn's path.
            self._soap = self.app if isinstance(self.app, AsgiSoap) else None

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            soap = self._soap
            if (
                soap is None
                or app is not soap
                or cycle.scope["method"] != "POST"
                or cycle.waiting_for_100_continue
                or self.flow.write_paused
                or cycle.scope["path"] in probes.PATHS
            ):
                super()._start_asgi_task(cycle, app)
                return
            context = contextvars.copy_context()
            environ = context.run(soap.environ, cycle.scope, time.monotonic())
            pending = self._pending = _Pending(cycle, environ, context)
            if declared_oversized(environ, soap.settings.max_body_bytes):
                self.loop.call_soon(self._answer, pending, b"", True)
            elif not cycle.more_body:
                # A pipelined request, read whole while the one before it was answered. Not
                # answered inline: a run of them would nest one answer inside the other.
                self.loop.call_soon(self._answer, pending, bytes(cycle.body), False)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            pending, soap = self._pending, self._soap
            if pending is None or soap is None or pending.cycle is not self.cycle:
                return
            cycle = pending.cycle
            if cycle.response_complete:
                return
            if len(cycle.body) > soap.settings.max_body_bytes:
                self._answer(pending, b"", True)  # read no more of it into memory
            else:
                self.flow.resume_reading()  # uvicorn pauses past 64 KiB for a receive() to come

        def on_message_complete(self) -> None:
            super().on_message_complete()
            pending = self._pending
            if pending is not None and pending.cycle is self.cycle:
                cycle = pending.cycle
                if not cycle.response_complete and not cycle.more_body:
                    self._answer(pending, bytes(cycle.body), False)

        def _answer(self, pending: _Pending, body: bytes, oversized: bool) -> None:
            if self._pending is not pending:
                return  # answered already
            self._pending = None
            assert self._soap is not None
            try:
                outcome = pending.context.run(self._soap.begin, pending.environ, body, oversized)
            except Exception:  # noqa: BLE001 - as uvicorn does for an application's error
                log.exception("SOAP request failed")
                self._write(pending.cycle, _SERVER_ERROR)
                return
            if isinstance(outcome, Reply):
                self._write(pending.cycle, outcome)
            else:
                outcome.add_done_callback(
                    lambda decided: self._complete(pending, decided), context=pending.context
                )

        def _complete(self, pending: _Pending, decided: asyncio.Future[Decision]) -> None:
            assert self._soap is not None
            try:
                reply = self._soap.complete(pending.environ, decided)
            except Exception:  # noqa: BLE001 - as uvicorn does for an application's error
                log.exception("SOAP request failed")
                reply = _SERVER_ERROR
            self._write(pending.cycle, reply)

        def _write(self, cycle: RequestResponseCycle, reply: Reply) -> None:
            """What uvicorn's ``send`` writes for a whole answer, then its completion."""
            if cycle.disconnected or cycle.response_complete:
                return
            head = _head(cycle, reply)
            if head is None:
                log.error("SOAP answer with a malformed header; answering 500")
                reply = _SERVER_ERROR
                head = _head(cycle, reply)
                assert head is not None
            cycle.response_started = cycle.response_complete = True
            cycle.waiting_for_100_continue = False
            self.transport.write(head + reply.payload)
            if not cycle.keep_alive:
                self.transport.close()
            self.on_response_complete()

    return DirectSoapProtocol


def _head(cycle: RequestResponseCycle, reply: Reply) -> bytes | None:
    """The status line and headers uvicorn would write for ``reply`` (None: a header it would
    refuse, or a length that is not the body's)."""
    status, headers, payload = reply
    content = [STATUS_LINE[status]]
    length: bytes | None = None
    closing = False
    for name, value in (*cycle.default_headers, *headers):
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
            return None
        if name == b"content-length":
            length = value
        elif name == b"connection" and b"close" in value.lower():
            cycle.keep_alive, closing = False, True
        content += (name, b": ", value, b"\r\n")
    if length is None:
        content.append(b"content-length: %d\r\n" % len(payload))
    elif not length.isdigit() or int(length) != len(payload):
        return None
    if not cycle.keep_alive and not closing:
        content.append(b"connection: close\r\n")
    content.append(b"\r\n")
    return b"".join(content)
