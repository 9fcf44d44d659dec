"""ASGI front for the SOAP application, served by uvicorn (httptools parser, uvloop).

Each worker process runs one event loop and calls the WSGI application inline: a verification
is a fraction of a millisecond of CPU, so a thread pool would only add hand-offs and GIL
contention. Concurrency comes from the worker processes. Only the database part leaves the
loop (:mod:`service.db_deadline`), so that no database, however hung, holds a request past
``OLV_DEADLINE_SECONDS`` counted from its arrival here, nor the requests behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from olv import normalize
from olv.config import Settings, get_settings
from olv.serving import RECEIVED, settle_gc
from service import metrics, probes
from service.auth import CREDENTIAL_HEADERS
from service.soap_app import ARRIVED, BODY, SoapApplication

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
            # The deadline counts from the moment the request's head was whole (the server's
            # protocol stamps it; a request pipelined behind another waited since), else from
            # here, the earliest this application sees it.
            arrived = scope.get("state", {}).get(RECEIVED) or time.monotonic()
            await self._http(scope, receive, send, arrived)
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
        oversized = normalize.is_ascii_digits(declared) and int(declared) > cap
        body = b""
        if not oversized:
            message = await receive()
            body = message.get("body", b"")
            if message.get("more_body", False):  # a body in pieces: gather them
                gathered = bytearray(body)
                while not oversized:
                    message = await receive()
                    gathered += message.get("body", b"")
                    if len(gathered) > cap:
                        oversized = True  # stop reading; the application answers 413
                    if not message.get("more_body", False):
                        break
                body = bytes(gathered)
            elif len(body) > cap:
                oversized = True
        if oversized:
            environ["CONTENT_LENGTH"] = str(cap + 1)
            body = b""
        else:
            environ["CONTENT_LENGTH"] = str(len(body))
        # The body as the application reads it (a WSGI stream only where Spyne needs one).
        environ[BODY] = body

        reply: list[Any] = [500, []]

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            reply[0] = int(status[:3])
            reply[1] = [(_header_name(k), v.encode("latin-1")) for k, v in headers]

        chunks = self.wsgi.admit(environ, start_response)
        if chunks is None:
            await self.wsgi.settle(environ)
            chunks = self.wsgi.respond(environ, start_response)
        if type(chunks) is list:  # the application's own answers: nothing to close
            payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        else:
            try:
                payload = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        metrics.observe(environ, reply[0], arrived)
        await send({"type": "http.response.start", "status": reply[0], "headers": reply[1]})
        await send({"type": "http.response.body", "body": payload})


# Lower-case header names as bytes, by the name the application gives (few distinct names).
_HEADER_NAMES: dict[str, bytes] = {}


def _header_name(name: str) -> bytes:
    encoded = _HEADER_NAMES.get(name)
    if encoded is None:
        encoded = name.lower().encode("latin-1")
        if len(_HEADER_NAMES) < 64:
            _HEADER_NAMES[name] = encoded
    return encoded


# The environ key of each request header name seen (None: a name with "_", dropped): header
# names repeat from request to request, so each is translated once. Bounded, since a client
# can send any names.
_ENVIRON_KEYS: dict[bytes, str | None] = {}
_ENVIRON_KEYS_LIMIT = 512


def _environ_key(raw_name: bytes) -> str | None:
    key = _ENVIRON_KEYS.get(raw_name)
    if key is None and raw_name not in _ENVIRON_KEYS:
        if b"_" in raw_name:
            # X_API_Key would otherwise become HTTP_X_API_KEY like X-API-Key: drop such names,
            # as nginx and Apache do, so only the hyphenated spelling can carry identity.
            key = None
        else:
            name = raw_name.decode("latin-1").upper().replace("-", "_")
            key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        if len(_ENVIRON_KEYS) >= _ENVIRON_KEYS_LIMIT:
            _ENVIRON_KEYS.clear()
        _ENVIRON_KEYS[raw_name] = key
    return key


# What the environ of every request on one listening socket shares, made once: a copy of it
# costs less than building the dict anew. Bounded: a server listens on few addresses.
_BASES: dict[tuple[Any, ...], dict[str, Any]] = {}


def _base(scope: Scope) -> dict[str, Any]:
    server = scope.get("server") or ("localhost", 80)
    key = (server, scope.get("root_path", ""), scope.get("http_version"), scope.get("scheme"))
    base = _BASES.get(key)
    if base is None:
        base = {
            "SCRIPT_NAME": key[1],
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": f"HTTP/{key[2] or '1.1'}",
            "wsgi.url_scheme": key[3] or "http",
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        if len(_BASES) >= 64:
            _BASES.clear()
        _BASES[key] = base
    return base


def _environ(scope: Scope) -> dict[str, Any]:
    client = scope.get("client") or ("", 0)
    environ = _base(scope).copy()
    environ["REQUEST_METHOD"] = scope["method"]
    environ["PATH_INFO"] = scope["path"]
    environ["QUERY_STRING"] = scope.get("query_string", b"").decode("latin-1")
    environ["REMOTE_ADDR"] = client[0]
    for raw_name, raw_value in scope.get("headers", []):
        key = _environ_key(raw_name)
        if key is None:
            continue
        value = raw_value.decode("latin-1")
        if key in environ and key.startswith("HTTP_"):
            # A credential sent twice counts as none: joined, two subjects could spell an
            # allowed one ("CN=a" and "O=b,C=US"), should a proxy add its header after a
            # client's rather than replace it. List headers are joined, as HTTP says.
            environ[key] = "" if key in CREDENTIAL_HEADERS else f"{environ[key]},{value}"
        else:
            environ[key] = value
    return environ


def create_app() -> AsgiSoap:
    """Factory for uvicorn's workers: each builds its own application after the fork."""
    return AsgiSoap()
