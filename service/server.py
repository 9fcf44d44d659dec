"""``olv soap serve``: the SOAP application under uvicorn, one worker process per core.

Each worker has its own listening socket on the same port (``SO_REUSEPORT``), so the kernel
spreads connections evenly; with one shared socket, one event loop tended to take most of the
keep-alive connections and its clients saw the worst latencies. A small supervisor restarts
a worker that dies, rolls the workers on SIGHUP, and on SIGTERM/SIGINT stops them gracefully
(each flushes its audit queue) and exits 0.

SO_REUSEPORT would also let a second ``olv soap serve`` (or any program of the same user) join
the port and silently take a share of the traffic, so the port is claimed first
(:func:`claim_port`); the workers bind only after that.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import struct
import sys
import time
from types import TracebackType

import uvicorn

from olv.config import Settings
from olv.errors import PortUnavailable, UsageError

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
        factory=True,
        host=host,
        port=port,
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
        log_config=None,  # keep OLV's JSON-lines logging
        timeout_keep_alive=30,
        timeout_graceful_shutdown=20,
        server_header=False,
        date_header=False,
    )


class PortClaim:
    """This process's hold on a TCP port; released on close (or when every holder exits).

    Two guards, because each alone misses a case:

    - the abstract Unix socket name ``olv-port-<port>``, bound and held by the supervisor (the
      workers inherit it): a second OLV server finds it taken even while the port is only
      shared through SO_REUSEPORT. The kernel frees the name when its holders exit, so nothing
      goes stale; abstract names live in the network namespace, like the port. Linux only.
    - a bind test of the address without SO_REUSEPORT, which fails while any other socket
      listens there: another program, or an OLV server without the lock.
    """

    def __init__(self, host: str, port: int) -> None:
        if not 1 <= port <= 65535:
            raise UsageError(f"port {port} is not a TCP port; choose one from 1 to 65535")
        self.host, self.port = host, port
        self._lock = _take_lock(port)
        try:
            _bind_test(host, port)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> PortClaim:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def claim_port(host: str, port: int) -> PortClaim:
    """Claim ``host:port`` for a server, or raise PortUnavailable / UsageError saying why."""
    return PortClaim(host, port)


def _take_lock(port: int) -> socket.socket | None:
    if not sys.platform.startswith("linux"):
        return None  # no abstract sockets: the bind test is the only guard
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0olv-port-{port}"
    try:
        lock.bind(name)
        lock.listen(16)  # lets a refused second server learn our pid (SO_PEERCRED)
    except OSError as exc:
        lock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        holder = _holder_pid(name)
        raise PortUnavailable(
            f"port {port} is already served by another OLV server"
            + (f" (pid {holder})" if holder else "")
            + "; stop it first or choose another --port"
        ) from None
    return lock


def _holder_pid(name: str) -> int | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(name)
            creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
    return struct.unpack("3i", creds)[0] or None


def _bind_test(host: str, port: int) -> None:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise PortUnavailable(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as sock:
        # SO_REUSEADDR only tolerates connections of an earlier run still in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise PortUnavailable(_bind_problem(host, port, exc)) from None


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use by another program; "
            "stop it or choose another --port"
        )
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} (below 1024); choose another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; check --host"
    return f"cannot listen on {host}:{port}: {exc.strerror}"


def _worker(host: str, port: int) -> None:
    """Runs in the child: bind our own socket, serve until SIGTERM, then leave."""
    code = 3  # counted as a failed start unless the server ran
    try:
        sock = _listen(host, port)
        server = uvicorn.Server(_config(host, port))
        # uvicorn re-raises the signal it shut down for; exit normally instead.
        server.capture_signals = _quiet_signals(server)  # type: ignore[method-assign]
        server.run(sockets=[sock])
        code = 0 if server.started else 3
    finally:
        os._exit(code)


def _quiet_signals(server: uvicorn.Server):  # noqa: ANN202 - a context-manager factory
    @contextlib.contextmanager
    def capture():  # noqa: ANN202
        previous = {
            sig: signal.signal(sig, server.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    return capture


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
