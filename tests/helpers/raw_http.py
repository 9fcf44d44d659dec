"""Raw-socket HTTP/1.1 servers for tests about what a client or proxy does on the wire: read
one request as sent, and accept connections on a thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


def read_request(conn: socket.socket) -> bytes | None:
    """One request, head and declared body, as received; None when the peer closed before a
    whole head arrived (a body cut short is returned as far as it came)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def accept_on_thread(listener: socket.socket, serve: Callable[[socket.socket], None]) -> None:
    """Each connection of ``listener`` served by ``serve`` on a thread of its own, until the
    listener is closed."""

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
