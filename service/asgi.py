"""ASGI front for the SOAP application, served by uvicorn (httptools parser, uvloop).

Each worker process runs one event loop and calls the WSGI application inline: a verification
is a fraction of a millisecond of CPU, so a thread pool would only add hand-offs and GIL
contention. Concurrency comes from the worker processes. Only the database part leaves the
loop (:mod:`service.db_deadline`), so that no database, however hung, holds a request past
``OLV_DEADLINE_SECONDS`` counted from its arrival here, nor the requests behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, NamedTuple

from olv import normalize
from olv.config import Settings, get_settings
from olv.serving import settle_gc
from service import metrics, probes
from service.coverage import Decision
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
        environ = self.environ(scope, arrived)
        oversized = declared_oversized(environ, cap)
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
        outcome = self.begin(environ, body, oversized)
        if not isinstance(outcome, Reply):
            await outcome
            outcome = self.complete(environ, outcome)
        status, headers, payload = outcome
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # The steps of a request, shared by the ASGI path above and service.direct_http, which
    # runs them from the HTTP protocol's callbacks without a task.

    def environ(self, scope: Scope, arrived: float) -> dict[str, Any]:
        """The request's WSGI environ, its arrival noted and its id (if any) taken."""
        environ = _environ(scope)
        environ[ARRIVED] = arrived
        metrics.begin(environ)
        return environ

    def begin(
        self, environ: dict[str, Any], body: bytes, oversized: bool
    ) -> Reply | asyncio.Future[Decision]:
        """Admission and the start of the decision: the reply when it is ready at once, else
        the decision to come from this turn's database batch, for :meth:`complete`."""
        if oversized:
            environ["CONTENT_LENGTH"] = str(self.settings.max_body_bytes + 1)
            body = b""
        else:
            environ["CONTENT_LENGTH"] = str(len(body))
        # The body as the application reads it (a WSGI stream only where Spyne needs one).
        environ[BODY] = body
        started = _Started()
        chunks = self.wsgi.admit(environ, started)
        if chunks is not None:
            return started.reply(environ, chunks)
        decided = self.wsgi.settle_soon(environ)
        if decided is None:
            return self.complete(environ)
        return decided

    def complete(
        self, environ: dict[str, Any], decided: asyncio.Future[Decision] | None = None
    ) -> Reply:
        """The reply, once the decision :meth:`begin` started (if any) has come."""
        if decided is not None:
            self.wsgi.settled(environ, decided)
        started = _Started()
        return started.reply(environ, self.wsgi.respond(environ, started))


class Reply(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    payload: bytes


class _Started:
    """The WSGI ``start_response`` of one request, and the reply it makes of the body."""

    __slots__ = ("status", "headers")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.status = int(status[:3])
        self.headers = [(_header_name(k), v.encode("latin-1")) for k, v in headers]

    def reply(self, environ: dict[str, Any], chunks: Iterable[bytes]) -> Reply:
        if type(chunks) is list:  # the application's own answers: nothing to close
            payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        else:
            try:
                payload = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        metrics.observe(environ, self.status, environ[ARRIVED])
        return Reply(self.status, self.headers, payload)


def declared_oversized(environ: dict[str, Any], cap: int) -> bool:
    """The request says its body is longer than the cap: it is not read."""
    declared = environ.get("CONTENT_LENGTH", "")
    return normalize.is_ascii_digits(declared) and int(declared) > cap


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
            environ[key] = f"{environ[key]},{value}"
        else:
            environ[key] = value
    return environ


def create_app() -> AsgiSoap:
    """Factory for uvicorn's workers: each builds its own application after the fork."""
    return AsgiSoap()
