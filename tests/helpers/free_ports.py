"""Ports for the servers a test starts by number (``--port N``, a config file).

A port found free by binding to port 0 comes from the kernel's ephemeral range, the range
every outgoing connection of the machine also takes its local port from: between the test
closing its probe socket and the server binding the port, a client connection (to
PostgreSQL, to another test's server) could take it, and the server then failed to start
("already in use"). Ports here come from below that range, where the kernel never picks
one on its own, and each pytest-xdist worker takes them from a slice of its own, so two
workers never hand out the same port either.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST = 10_000  # above the well-known and most registered services' ports
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default, and what other kernels mostly use or exceed


def _slice() -> range:
    """This worker's share of the ports below the ephemeral range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (_ephemeral_start() - LOWEST) // count
    return range(LOWEST + index * size, LOWEST + (index + 1) * size)


def _binds(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_ephemeral() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A loopback port nothing listens on, not handed out before in this process."""
    ports = _slice()
    if len(ports) < 100:  # an unusual ephemeral range leaves no room below it
        return _any_ephemeral()
    start = random.randrange(len(ports))
    for step in range(len(ports)):
        port = ports[(start + step) % len(ports)]
        if port not in _handed_out and _binds(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")
