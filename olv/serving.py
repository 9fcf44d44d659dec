"""How OLV's servers run uvicorn (``olv soap serve``, ``olv portal serve``): the app factory on
httptools and uvloop, quiet (OLV writes its own JSON-lines logs), no server header, and a
clean stop that exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from olv import metrics
from olv.response_write import one_write

log = logging.getLogger(__name__)

# Each server adds its host, port and its own timeouts.
COMMON_OPTIONS: dict[str, Any] = {
    "factory": True,
    "http": "httptools",
    "loop": "uvloop",
    "lifespan": "on",
    "access_log": False,
    "log_level": "warning",
    "log_config": None,  # keep OLV's JSON-lines logging
    "server_header": False,
    # The client address is the TCP peer; forwarding headers are judged by olv.forwarding
    # against OLV_TRUSTED_PROXIES, never by uvicorn's own loopback trust.
    "proxy_headers": False,
}


# As Apache's mod_reqtimeout (MinRate=500): each 500 bytes received buy a second more. Any
# real client sends a 64 KiB body in well under a second.
MIN_BODY_RATE = 500.0  # bytes per second
# Before the least rate applies, a body may take this many times its idle limit in all: a
# body that keeps moving is never cut at the idle limit itself.
BODY_ALLOWANCE = 2
# Requests read ahead of their turn, each an object uvicorn keeps until answered: without a
# bound, a client sending requests faster than it reads answers grew a worker by gigabytes.
MAX_PIPELINED = 100
# A request's head (request line and header fields), as nginx's default buffers take it; and
# at most this many header fields (Apache's LimitRequestFields). Neither httptools nor uvicorn
# has a limit, and both build a long line or value by concatenation: a 5-MB head held a
# worker's event loop for 7-23 s (quadratic time), and every request behind it.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100
# The key in the scope's "state" of the moment the request's head was whole (time.monotonic()):
# each server's deadline counts from there, so that a request pipelined behind another counts
# its wait in the queue (uvicorn starts the application on it only after the answer before).
RECEIVED = "received"
# When a kept-alive connection's idle time runs out with its next request already waiting
# unread, the close waits this long for the loop to read it, at most KEEP_ALIVE_DEFERRALS times.
KEEP_ALIVE_RECHECK_SECONDS = 0.05
KEEP_ALIVE_DEFERRALS = 40


class PipelinedTooDeep(RuntimeError):
    """Stops the parser: uvicorn answers 400 and closes the connection."""


class HeadTooLarge(RuntimeError):
    """Stops the parser: uvicorn answers 400 and closes the connection."""


def guarded_http(header_seconds: float, body_idle_seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the read limits it lacks (it times out only idle
    keep-alive connections): a request's head must be complete ``header_seconds`` after the
    connection opened (or after its first byte, on a kept-alive connection); a body must not
    stall for ``body_idle_seconds``, and once it has taken :data:`BODY_ALLOWANCE` times
    that, must have come at :data:`MIN_BODY_RATE` on average; and at most
    :data:`MAX_PIPELINED` requests may wait behind the one being answered. A client that
    sends half a request and waits, or drips a body a byte at a time, is dropped instead of
    holding a connection for ever (slowloris); one that pipelines without end gets a 400
    instead of a queue as long as its stream.

    A client may end its side of the connection once its requests are sent (a half-close, as
    ``nc -N``, some SOAP stacks and load balancers do): each request received whole is still
    answered, in order, and the connection closed after the last answer. uvicorn's
    ``eof_received`` returns None, which makes the transport close at once, answers unwritten.
    With nothing whole left to answer (no request, or part of one) it still closes at once.

    A head over :data:`MAX_HEAD_BYTES` or with more than :data:`MAX_HEADER_FIELDS` fields gets
    a 400 and the connection closes. Trailer fields (after a chunked body) are dropped: uvicorn
    would add them to the request's headers, where an identity or forwarding header sent as a
    trailer would pass for one the proxy in front checked. Each request is stamped with the
    moment its head was whole (:data:`RECEIVED`).

    A kept-alive connection whose idle time ran out is not closed while bytes wait unread on
    its socket: uvloop runs due timers before it polls, so after a long turn of the loop (a
    burst of new connections read in one go, say) the next request may have arrived in time
    and not yet been read. uvicorn closed such a connection, and its client, which had sent well
    within the keep-alive time, got no answer."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        # One timer per connection, moved only when it would fire too late: arming and
        # cancelling two timers for every request of a kept-alive connection cost more than
        # the rest of the guard. Between requests the timer may still run; it then finds
        # nothing being read and ends.
        _read_timer: asyncio.TimerHandle | None = None
        _timer_at = 0.0  # when the timer fires
        _read_at = 0.0  # when the current phase began, or the body last moved
        _limit = 0.0  # seconds the current phase may stay quiet (0: nothing being read)
        _body_due = 0.0  # when the body must be whole at the least rate (0: not in a body)
        _whole: RequestResponseCycle | None = None  # the last request received whole
        _in_head = False  # between a request's first byte and its head being whole
        _head_began = False  # whether the current head began in the data being parsed
        _head_bytes = 0
        _head_fields = 0
        _keep_alive_deferrals = 0

        def timeout_keep_alive_handler(self) -> None:
            if (
                self._keep_alive_deferrals < KEEP_ALIVE_DEFERRALS
                and not self.transport.is_closing()
                and _bytes_waiting(self.transport)
            ):
                self._keep_alive_deferrals += 1
                self.timeout_keep_alive_task = self.loop.call_later(
                    KEEP_ALIVE_RECHECK_SECONDS, self.timeout_keep_alive_handler
                )
                return
            super().timeout_keep_alive_handler()

        def on_response_complete(self) -> None:
            self._keep_alive_deferrals = 0
            super().on_response_complete()

        def data_received(self, data: bytes) -> None:
            self._head_began = False
            super().data_received(data)
            if not self._in_head or self.transport.is_closing():
                return
            if not self._head_began:  # the whole of it belongs to the head still being read
                self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._in_head = False
                self.send_400_response("Request head too large.")

        def _arm(self, seconds: float) -> None:
            now = self.loop.time()
            self._read_at, self._limit = now, seconds
            if self._read_timer is not None:
                if self._timer_at <= now + seconds:
                    return  # it fires in time and looks again
                self._read_timer.cancel()
            self._timer_at = now + seconds
            self._read_timer = self.loop.call_at(self._timer_at, self._too_slow)

        def _disarm(self) -> None:
            self._limit = 0.0
            self._body_due = 0.0

        def _too_slow(self) -> None:
            self._read_timer = None
            seconds = self._limit
            if not seconds:
                return  # between requests: uvicorn's keep-alive timeout takes over
            now = self.loop.time()
            due = self._read_at + seconds
            if self._body_due and self._body_due < due:
                due = self._body_due
            if now < due:  # the phase began or the body moved since: look again then
                self._timer_at = due
                self._read_timer = self.loop.call_at(due, self._too_slow)
            elif self.flow is not None and self.flow.read_paused:
                # We stopped reading (the app is busy), not the client.
                if self._body_due:
                    self._body_due = now + seconds
                self._arm(seconds)
            elif not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_seconds)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_began = True, True
            self._head_bytes = self._head_fields = 0
            if not self._limit:
                self._arm(header_seconds)

        def on_url(self, url: bytes) -> None:
            if self._head_began:  # a later read's bytes are counted whole by data_received
                self._head_bytes += len(url)
            if self._head_bytes > MAX_HEAD_BYTES:
                raise HeadTooLarge(f"request line over {MAX_HEAD_BYTES} bytes")
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if not self._in_head:
                return  # a trailer field: dropped
            if self._head_began:  # a later read's bytes are counted whole by data_received
                self._head_bytes += len(name) + len(value)
            self._head_fields += 1
            if self._head_bytes > MAX_HEAD_BYTES or self._head_fields > MAX_HEADER_FIELDS:
                raise HeadTooLarge(
                    f"request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADER_FIELDS} fields"
                )
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self.scope["state"][RECEIVED] = time.monotonic()
            super().on_headers_complete()
            if len(self.pipeline) > MAX_PIPELINED:
                raise PipelinedTooDeep(f"more than {MAX_PIPELINED} requests read ahead")
            self._arm(body_idle_seconds)
            self._body_due = self._read_at + BODY_ALLOWANCE * body_idle_seconds

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._read_at = self.loop.time()
            if self._body_due:
                self._body_due += len(body) / MIN_BODY_RATE

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()
            cycle = self.cycle
            if cycle is not None and not cycle.more_body:
                self._whole = cycle

        def eof_received(self) -> bool:  # type: ignore[override]  # uvicorn says None
            # Nothing more can come: the read limits would only cut answers still being made.
            self._disarm()
            whole = self._whole
            if whole is None or whole.response_complete:
                return False  # the transport closes
            # Answers go in order, so the last whole request's answer is the last to go; a
            # request after it was cut short by the end of file and is never answered.
            while self.pipeline and self.pipeline[0][0] is not whole:
                self.pipeline.popleft()
            whole.keep_alive = False  # its answer closes the connection
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol


def _bytes_waiting(transport: asyncio.BaseTransport) -> bool:
    """Whether the transport's socket has bytes (or an end of file) not yet read."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()  # not select.select: descriptors past 1023 are common here
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def http_protocol(header_seconds: float, body_idle_seconds: float) -> type[HttpToolsProtocol]:
    """The protocol class both servers run: the read timeouts of :func:`guarded_http`, and a
    connection's writes of one loop turn in one write (:mod:`olv.response_write`)."""
    return one_write(guarded_http(header_seconds, body_idle_seconds))


# Young-generation collections every 50,000 allocations instead of 700: a request allocates
# a few thousand objects, and at the default the collector ran several times per request,
# costing a fifth of the portal's CPU and most of its latency tail (bench/RESULTS.md).
GC_THRESHOLDS = (50_000, 20, 10)


def settle_gc() -> None:
    """For a server process once its app is built: move what startup made (modules, schemas,
    templates) out of the collector's sight for good, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def end_process(code: int) -> NoReturn:
    """For a server's process once its server has stopped (its application's shutdown run,
    its workers gone): the process ends here with ``code``, its output flushed, as each worker
    under :class:`Supervisor` ends. The interpreter's own teardown is skipped: it frees nothing
    that outlives the process, and in it zxing-cpp's bindings (the portal's ID-card reader)
    reported every object of theirs still alive, a page of "leaked" lines at each stop."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


class QuietServer(uvicorn.Server):
    """A uvicorn server whose SIGTERM/SIGINT stop ends the process normally."""

    # uvicorn re-raises the stop signal after shutting down; a clean stop should exit 0.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket of the port that other workers of this server share."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def _worker(host: str, port: int, config: Callable[[], uvicorn.Config]) -> None:
    """Runs in the child: bind our own socket, serve until SIGTERM, then leave."""
    code = 3  # counted as a failed start unless the server ran
    try:
        sock = listen(host, port)
        server = QuietServer(config())
        server.run(sockets=[sock])
        code = 0 if server.started else 3
    finally:
        os._exit(code)


class Supervisor:
    """Forks ``workers`` uvicorn servers, each on its own SO_REUSEPORT socket of the port, so
    the kernel spreads connections evenly (with one shared socket, one event loop tended to
    take most keep-alive connections and its clients saw the worst latencies). Restarts a
    worker that dies, rolls the workers on SIGHUP, and on SIGTERM/SIGINT stops them
    gracefully and returns 0 (1 when workers keep failing to start).

    SO_REUSEPORT would also let another program of the same user join the port, so callers
    claim the port first (:func:`olv.ports.claim_port`)."""

    def __init__(
        self, host: str, port: int, workers: int, config: Callable[[], uvicorn.Config]
    ) -> None:
        self.host, self.port, self.workers, self.config = host, port, workers, config
        self.children: set[int] = set()
        self.retiring: set[int] = set()  # replaced on SIGHUP: not to be respawned
        self.stopping = False

    def spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            _worker(self.host, self.port, self.config)
        self.children.add(pid)

    def run(self) -> int:
        for _ in range(self.workers):
            self.spawn()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._roll)
        failures = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            self.children.discard(pid)
            metrics.worker_gone(pid)
            if self.stopping or pid in self.retiring:
                self.retiring.discard(pid)
                continue
            if os.waitstatus_to_exitcode(status) == 3:
                failures += 1
                if failures >= self.workers * 3:
                    log.error("workers fail to start; giving up")
                    self._stop(signal.SIGTERM, None)
                    return 1
                time.sleep(0.5)
            self.spawn()
        return 0

    def _stop(self, _sig: int, _frame: object) -> None:
        self.stopping = True
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)

    def _roll(self, _sig: int, _frame: object) -> None:
        # Replace the workers one at a time; each old one finishes its requests and flushes.
        for pid in list(self.children - self.retiring):
            self.retiring.add(pid)
            self.spawn()
            _signal(pid, signal.SIGTERM)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
