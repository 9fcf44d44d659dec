"""A small real HTTP proxy in front of a real service that rewrites its answers: how an insurer
that is almost, but not quite, schema-valid looks to the portal. It also keeps the request
bodies it forwarded, so a test can see what left the portal."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import loopback

Edit = Callable[[bytes], bytes]
_PASSED_HEADERS = ("content-type", "soapaction")


@dataclass
class RewritingProxy:
    base: str
    requests: list[bytes] = field(default_factory=list)
    edits: int = 0  # answers the edit actually changed

    def url(self, path: str) -> str:
        return self.base + path


@contextmanager
def rewriting_proxy(target: str, edit: Edit) -> Iterator[RewritingProxy]:
    """Forward every request to ``target`` (a base URL) and answer with ``edit(body)``."""
    proxy = RewritingProxy("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items() if k.lower() in _PASSED_HEADERS}
            upstream = loopback.request(
                self.command, target + self.path, content=body, headers=headers, timeout=10
            )
            answer = edit(upstream.content)
            with lock:
                proxy.requests.append(body)
                proxy.edits += answer != upstream.content
            self.send_response(upstream.status_code)
            self.send_header("Content-Type", upstream.headers.get("content-type", "text/xml"))
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_POST = _forward  # noqa: N815
        do_GET = _forward  # noqa: N815

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


def after_confirmed(inserted: bytes) -> Edit:
    """An edit that puts ``inserted`` right after a ``Confirmed`` ResponseCode, its elements
    written with the namespace prefix the service used there."""
    confirmed = re.compile(rb"<(\w+:)?ResponseCode>Confirmed</(?:\w+:)?ResponseCode>")

    def edit(body: bytes) -> bytes:
        found = confirmed.search(body)
        if found is None:
            return body
        prefix = found.group(1) or b""
        elements = re.sub(rb"<(/?)(\w)", rb"<\1" + prefix + rb"\2", inserted)
        return body[: found.end()] + elements + body[found.end() :]

    return edit
