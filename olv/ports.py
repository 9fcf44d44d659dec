"""Claiming a TCP port for an OLV server before it announces itself or starts workers.

A server whose workers share a port through SO_REUSEPORT cannot rely on ``bind`` failing: the
kernel lets any process of the same user join, and the two then split the traffic silently.
:func:`claim_port` refuses, with one line naming what holds the port, a port out of range, a
second OLV server on the same port, and any other program listening there.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from types import TracebackType

from olv.errors import PortUnavailable, UsageError

__all__ = ["PortClaim", "claim_port"]


class PortClaim:
    """This process's hold on a TCP port; released on close (or when every holder exits).

    Two guards, because each alone misses a case:

    - the abstract Unix socket name ``olv-port-<port>``, held by the claiming process (and,
      through fork, by its workers): a second OLV server finds it taken even while the port is
      only shared through SO_REUSEPORT. The kernel frees the name when its holders exit, so nothing
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
