"""What every request passes before the app sees it (:class:`RequestGuard`).

- The 5-second budget starts when the request arrives: the guard stamps that moment.
- The client address is the TCP peer; forwarding headers count only from a peer in
  ``OLV_TRUSTED_PROXIES``, and then only the entry that proxy wrote (:mod:`olv.forwarding`,
  the SOAP service's rule). uvicorn's own loopback trust is off (``olv.serving``).
- Every body has a cap by path, checked against ``Content-Length`` and against what actually
  arrives (a chunked body has no length): 413 in the error shape, whatever the app was doing.
  Forms and the pages' fields are small; only the two upload pages take files.
- The upload pages check who is asking, and that their role may upload there, before the body
  is read: neither a stranger nor a signed-in officer can make the portal spool hundreds of
  megabytes only to be refused. The verifications check who is asking before the body too:
  a sender without a valid token gets 401, whatever the body holds.
- A NUL anywhere in the address, or in a form, is refused with 422: no text column of
  PostgreSQL can hold it, and no identifier has one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from olv import forwarding
from olv.config import Settings
from olv.serving import RECEIVED
from portal import errors
from portal.errors import ApiError
from portal.permissions import Action

API_MAX_BODY_BYTES = 1024 * 1024  # a full batch of 1,000 items is about 150 KB
# Larger bodies by path: 5,000 enforcement transactions at their widest are about 2 MB.
API_BODY_LIMITS = {"/api/v1/iies/transactions": 3 * 1024 * 1024}
FORM_MAX_BODY_BYTES = 64 * 1024  # the largest page form (an insurer's certificates) is < 16 KB
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers, the CSRF field
_FORM = b"application/x-www-form-urlencoded"
TRUSTED_CACHE_SIZE = 4096  # distinct peer addresses remembered (then forgotten all at once)
_NUL = (b"%00", b"\x00")
# Where a sender without a valid token is refused before the body is read (SPEC §5: 401
# without a valid token), as FastAPI would parse it first: the verifications, whose bodies
# are the largest and most often sent of the API's.
TOKEN_BEFORE_BODY = frozenset({"/api/v1/verify", "/api/v1/verify/batch"})


@dataclass(frozen=True)
class Upload:
    """An upload page: its largest file in bytes, and the action whose roles may send one."""

    max_bytes: int
    action: Action


# An upload page's path → its rule (filled in when the app is built).
UploadLimits = dict[str, Upload]
Authenticate = Callable[[Request], Awaitable[object]]


def body_limit(path: str, uploads: UploadLimits) -> int:
    """The largest body a request to ``path`` may send."""
    upload = uploads.get(path)  # an upload path (also under /api/) has its own cap
    if upload is not None:
        return upload.max_bytes + MULTIPART_OVERHEAD_BYTES
    if path.startswith("/api/"):
        return API_BODY_LIMITS.get(path, API_MAX_BODY_BYTES)
    return FORM_MAX_BODY_BYTES


def nul_in_address(scope: Scope) -> bool:
    return any(nul in scope.get("raw_path", b"") + scope["query_string"] for nul in _NUL)


def stamp_arrival(scope: Scope) -> None:
    """The moment the budget starts: the first layer to see the request stamps it."""
    scope.setdefault("state", {}).setdefault(RECEIVED, time.monotonic())


class ClientAddress:
    """The client's address (and scheme) in the scope: the TCP peer, or what a trusted
    proxy's forwarding headers say (:mod:`olv.forwarding`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Whether a peer is a trusted proxy, by its address as written: the peers are few and
        # repeat on every request, and the network test cost more than the rest of the guard.
        self._trusted: dict[str, bool] = {}

    def _is_proxy(self, host: str) -> bool:
        trusted = self._trusted.get(host)
        if trusted is None:
            if len(self._trusted) >= TRUSTED_CACHE_SIZE:
                self._trusted.clear()
            peer = forwarding.parse_address(host)
            trusted = forwarding.within(peer, self.settings.trusted_proxies)
            self._trusted[host] = trusted
        return trusted

    @staticmethod
    def carry(addressed: Scope, scope: Scope) -> None:
        """Give ``scope`` what :meth:`apply` set on its copy ``addressed``: the same as
        applying it again, without working it out twice."""
        for key in ("client", "scheme"):  # the keys apply sets
            if key in addressed:
                scope[key] = addressed[key]

    def apply(self, scope: Scope) -> None:
        """Set the scope's client (and scheme) once, before anything reads them."""
        client = scope.get("client")
        if not client or not self._is_proxy(client[0]):
            return
        environ = forwarding.asgi_environ(client[0], scope["headers"])
        source = forwarding.source(environ, self.settings)
        scope["client"] = None if source.address is None else (str(source.address), 0)
        scheme = forwarding.forwarded_scheme(environ, self.settings)
        if scheme is not None:
            scope["scheme"] = scheme


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        uploads: UploadLimits,
        authenticate: Authenticate,
    ) -> None:
        self.app = app
        self.settings = settings
        self.uploads = uploads
        self.authenticate = authenticate
        self.client_address = ClientAddress(settings)

    def limit(self, path: str) -> int:
        return body_limit(path, self.uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stamp_arrival(scope)
        self.client_address.apply(scope)
        if nul_in_address(scope):
            await _answer(scope, receive, send, errors.invalid("url", "contains a NUL character"))
            return
        limit = self.limit(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(scope, receive, send, _too_large(limit))
            return
        upload = self.uploads.get(scope["path"])
        if upload is not None and scope["method"] == "POST":
            refusal = await self._refusal(scope, upload)
            if refusal is not None:
                await _answer(scope, receive, send, refusal)
                return
        elif scope["path"] in TOKEN_BEFORE_BODY and scope["method"] == "POST":
            refusal = await self._unknown(scope)
            if refusal is not None:
                await _answer(scope, receive, send, refusal)
                return
        if headers.get(b"content-type", b"").split(b";")[0].strip().lower() == _FORM:
            checked = await _checked_form(scope, receive, send, limit)
            if checked is None:
                return
            receive = checked
        await self._capped(scope, receive, send, limit)

    async def _unknown(self, scope: Scope) -> ApiError | None:
        """Why the sender is not known (401; 429 or 503 as for any request), or None; who they
        are is kept for the route (:func:`portal.deps.principal_of`), so it is counted once."""
        try:
            await self.authenticate(Request(scope))
        except ApiError as exc:
            return exc
        return None

    async def _refusal(self, scope: Scope, upload: Upload) -> ApiError | None:
        """Why this sender may not upload here (401, 403, 429), or None."""
        try:
            principal = await self.authenticate(Request(scope))
        except ApiError as exc:
            return exc
        role = getattr(principal, "role", None)
        if not isinstance(role, str) or not upload.action.allows(role):
            return ApiError(403, f"the {role} role may not do this")
        return None

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Pass the body on while it stays under ``limit``; past it, the app is told the client
        went away and whatever it answers is replaced by the 413."""
        seen = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def replaced(message: Message) -> None:
            nonlocal started
            if over and not started:
                if message["type"] == "http.response.start":
                    started = True
                    await _answer(scope, receive, send, _too_large(limit))
                return
            if over:
                return  # the rest of the app's own answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, replaced)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body over {limit} bytes")


async def _checked_form(scope: Scope, receive: Receive, send: Send, limit: int) -> Receive | None:
    """Read a small form whole (it is under ``limit``), refuse it if it holds a NUL, and hand
    the app a receive that replays it; None once an error has been answered."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return receive  # the client left; the app sees that for itself
        body += message.get("body", b"")
        if len(body) > limit:
            await _answer(scope, receive, send, _too_large(limit))
            return None
        if not message.get("more_body", False):
            break
    if any(nul in body for nul in _NUL):
        await _answer(scope, receive, send, errors.invalid("form", "contains a NUL character"))
        return None
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        return await receive()

    return replay


async def _answer(scope: Scope, receive: Receive, send: Send, exc: ApiError) -> None:
    response = await errors.respond(Request(scope, receive), exc)
    await response(scope, receive, send)
