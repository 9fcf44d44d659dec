"""Loopback stand-ins for a database link that fails: a proxy that stops forwarding, and an
address whose connection attempts are silently dropped. Nothing leaves the machine."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class HoldingProxy:
    """Forwards TCP connections to ``target`` until :meth:`hold`; then nothing moves.

    While held, bytes already sent stay inside the proxy and new connections are accepted
    but never connected onward: to its client the server looks hung mid-query and
    mid-connect. :meth:`release` lets everything flow again. ``delay`` (seconds) holds each
    chunk that long before passing it on: a slow link rather than a dead one.
    """

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self.delay = 0.0
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._track(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._flowing.wait()
                if not data or self._closed:
                    break
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def holding_proxy(target: tuple[str, int], port: int = 0) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(target, port)
    try:
        yield proxy
    finally:
        proxy.close()


class DroppedConnects:
    """A loopback port whose SYNs are dropped: its listener's accept queue is full and never
    drained, so a connect() there waits in SYN-SENT as if packets were lost on the way."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        while True:  # fill the queue until a connect stops completing
            probe = socket.socket()
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", self.port))
            except OSError:
                probe.close()
                return
            self._fillers.append(probe)
            if len(self._fillers) > 64:
                self.close()
                raise RuntimeError("the accept queue does not fill up on this system")

    def close(self) -> None:
        """Stop listening (safe to call more than once)."""
        for sock in self._fillers:
            sock.close()
        self._fillers.clear()
        self._listener.close()
