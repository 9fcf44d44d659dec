"""Start a server under test on a free loopback port, wait until it answers, stop it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from procstat import process_tree


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The supervisor and its workers: their CPU is the server's CPU."""
        return process_tree(self.process.pid)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (a graceful stop: workers flush their audit queues), SIGKILL after timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    *,
    port: int | None = None,
    wait_seconds: float = 60,
) -> Server:
    """Run ``command --port PORT`` (a free port unless given) until /healthz answers, its
    output in ``workdir/NAME.log``; exits the bench if it never does within ``wait_seconds``
    (more under valgrind)."""
    port = free_port() if port is None else port
    log = workdir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    server = Server(name, process, port, log)
    deadline = time.monotonic() + wait_seconds
    while True:
        if process.poll() is not None:
            sys.exit(f"{name} exited early:\n{log.read_text()}")
        if healthy(port):
            break
        if time.monotonic() > deadline:
            server.stop()
            sys.exit(f"{name} did not answer /healthz in {wait_seconds:g} s:\n{log.read_text()}")
        time.sleep(0.2)
    # /healthz answered from one worker: give the others a moment to finish booting.
    time.sleep(1.0)
    return server
