"""``olv soap serve``: the SOAP application under uvicorn, one worker process per core.

Each worker has its own listening socket on the same port (``SO_REUSEPORT``), so the kernel
spreads connections evenly; with one shared socket, one event loop tended to take most of the
keep-alive connections and its clients saw the worst latencies. A small supervisor restarts
a worker that dies, rolls the workers on SIGHUP, and on SIGTERM/SIGINT stops them gracefully
(each flushes its audit queue) and exits 0.

SO_REUSEPORT would also let a second ``olv soap serve`` (or any program of the same user) join
the port and silently take a share of the traffic, so the port is claimed first
(:func:`olv.ports.claim_port`); the workers bind only after that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time

import uvicorn

from olv.config import Settings
from olv.ports import PortClaim
from olv.serving import COMMON_OPTIONS, QuietServer

log = logging.getLogger(__name__)


def default_workers() -> int:
    # One event loop per core: a third process on two cores measured a worse p99, not more
    # throughput (bench/RESULTS.md).
    return os.cpu_count() or 1


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def _config(host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        "service.asgi:create_app",
        **COMMON_OPTIONS,
        host=host,
        port=port,
        # The client address is the TCP peer; forwarding headers are judged by
        # service.forwarding against OLV_TRUSTED_PROXIES, never by uvicorn's own loopback trust.
        proxy_headers=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=20,
        date_header=False,
    )


def _worker(host: str, port: int) -> None:
    """Runs in the child: bind our own socket, serve until SIGTERM, then leave."""
    code = 3  # counted as a failed start unless the server ran
    try:
        sock = _listen(host, port)
        server = QuietServer(_config(host, port))
        server.run(sockets=[sock])
        code = 0 if server.started else 3
    finally:
        os._exit(code)


class Supervisor:
    def __init__(self, host: str, port: int, workers: int) -> None:
        self.host, self.port, self.workers = host, port, workers
        self.children: set[int] = set()
        self.retiring: set[int] = set()  # replaced on SIGHUP: not to be respawned
        self.stopping = False

    def spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            _worker(self.host, self.port)
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


def serve(settings: Settings, claim: PortClaim, workers: int | None = None) -> None:
    """Run on the claimed port until SIGTERM/SIGINT; exits 0 once every worker has stopped."""
    count = workers or settings.soap_workers or default_workers()
    code = Supervisor(claim.host, claim.port, count).run()
    claim.close()
    sys.exit(code)
