"""ASGI front for the SOAP application, served by uvicorn (httptools parser, uvloop).

Each worker process runs one event loop and calls the WSGI application inline: a verification
is a fraction of a millisecond of CPU, so a thread pool would only add hand-offs and GIL
contention. Concurrency comes from the worker processes. Only the database part leaves the
loop (:mod:`service.db_deadline`), so that no database, however hung, holds a request past
``OLV_DEADLINE_SECONDS`` counted from its arrival here, nor the requests behind it.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from olv import normalize
from olv.config import Settings, get_settings
from olv.serving import settle_gc
from service import metrics, probes
from service.soap_app import ARRIVED, SoapApplication

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)


class AsgiSoap:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.wsgi = SoapApplication(self.settings)
        self.probes = probes.Probes(self.settings, lambda: self.wsgi.verifier.engine)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] in probes.PATHS:
                await self.probes.answer(scope, send)
                return
            # The deadline counts from here: the earliest this application sees a request.
            await self._http(scope, receive, send, time.monotonic())
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _ = self.wsgi.verifier  # open the engine and schemas before the first request
                # Long-lived objects (schemas, Spyne's interface, modules) leave the collector's
                # view, and young collections run per many requests rather than per request.
                settle_gc()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.wsgi.close()  # flushes this worker's audit queue: a graceful stop loses none
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send, arrived: float) -> None:
        cap = self.settings.max_body_bytes
        environ = _environ(scope)
        environ[ARRIVED] = arrived
        metrics.begin(environ)
        declared = environ.get("CONTENT_LENGTH", "")
        body = bytearray()
        oversized = normalize.is_ascii_digits(declared) and int(declared) > cap
        while not oversized:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > cap:
                oversized = True  # stop reading; the application answers 413
            if not message.get("more_body", False):
                break
        if oversized:
            environ["CONTENT_LENGTH"] = str(cap + 1)
            body = bytearray()
        else:
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(bytes(body))

        reply: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            reply["status"] = int(status.split(" ", 1)[0])
            reply["headers"] = [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
            ]

        chunks = self.wsgi.admit(environ, start_response)
        if chunks is None:
            await self.wsgi.settle(environ)
            chunks = self.wsgi.respond(environ, start_response)
        try:
            payload = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        metrics.observe(environ, reply["status"], arrived)
        await send(
            {"type": "http.response.start", "status": reply["status"], "headers": reply["headers"]}
        )
        await send({"type": "http.response.body", "body": payload})


def _environ(scope: Scope) -> dict[str, Any]:
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for raw_name, raw_value in scope.get("headers", []):
        if b"_" in raw_name:
            # X_API_Key would otherwise become HTTP_X_API_KEY like X-API-Key: drop such names,
            # as nginx and Apache do, so only the hyphenated spelling can carry identity.
            continue
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[name] = value
        else:
            key = f"HTTP_{name}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def create_app() -> AsgiSoap:
    """Factory for uvicorn's workers: each builds its own application after the fork."""
    return AsgiSoap()
