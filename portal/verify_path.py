"""The hot path: ``POST /api/v1/verify`` by API token, answered without FastAPI's routing,
dependency solving and response re-validation (:class:`VerifyFastPath`).

A verification is the one request the portal answers hundreds of times a second, and FastAPI's
machinery around it (a dozen layers, the dependency graph solved per request, the returned model
validated again before it is written) cost about a third of the portal's CPU per verification
(bench/RESULTS.md). This layer answers it with the same parts the route uses —
:func:`portal.deps.principal_of`, :func:`portal.deps.require`,
:meth:`portal.routing.Router.verify` — and the same error handlers (:func:`portal.errors.handled`).

It takes only what it can answer exactly as the route would: a JSON body (``Content-Type:
application/json``) that is a valid :class:`~portal.schemas.VerifyRequest`, from a request with
``Authorization: Bearer …``. Everything else — another content type, a body that does not
parse or validate, a browser's session — goes on to the app unchanged, its body replayed, and
gets FastAPI's own answer (the 422 shapes of ``tests/test_portal_api.py``). Reading and checking
the body has no side effect, so a request handed on is counted and logged once, there. The
token is checked before the body is read, as the guard does for the route: without a valid
one the answer is 401 from here, whatever the body holds (the check counts nothing; the
owner it finds goes in the scope to the rate-limited look-up that follows, here or in the
app, so the token cache is asked once per request).

It is the outermost of the portal's own layers and does, for the requests it answers, what
the three inside it do for every other (one layer instead of four around the answer, and no
wrapper around each message sent): the request guard's rules (:mod:`portal.guard`: the budget
starts at arrival, the client address through a trusted proxy, no NUL in the address, the
body's cap), the headers of every answer (:mod:`portal.headers`), and the request id, count
and timing (:mod:`portal.observe`). It takes a request only when the guard would let it
through: one the guard refuses, or whose body has no declared length, goes on to be refused
or read there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from olv import normalize, request_id
from olv.config import Settings
from portal import errors, guard, observe, permissions
from portal.deps import KNOWN_OWNER, bearer_known, principal_of, received_at, require
from portal.headers import completed as headers_for
from portal.routing import Router
from portal.schemas import VerifyRequest
from portal.state_reads import RecordsAlong

PATH = "/api/v1/verify"
_JSON = b"application/json"

Responder = Callable[[Request], Awaitable[Response]]


class VerifyFastPath:
    def __init__(
        self, app: ASGIApp, settings: Settings, uploads: guard.UploadLimits, route: Any = None
    ) -> None:
        self.app = app
        self.uploads = uploads
        self.client_address = guard.ClientAddress(settings)
        self.route = route  # the route's object, for the metrics' endpoint label (portal.observe)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        guard.stamp_arrival(scope)
        content_type = authorization = length = sent_id = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == observe.HEADER:
                sent_id = value
        if (
            content_type != _JSON
            or authorization is None
            or authorization[:7].lower() != b"bearer "
            or length is None
            or not length.isdigit()
            or int(length) > guard.body_limit(PATH, self.uploads)
            or guard.nul_in_address(scope)
        ):
            await self.app(scope, receive, send)
            return
        rid = observe.chosen(sent_id)
        # The client's address (as a trusted proxy gives it) worked out once, on a copy: the
        # scope itself gets it from whichever layer answers, this one or the app's guard.
        addressed = dict(scope)
        self.client_address.apply(addressed)
        # The token before the body (SPEC §5: 401 without a valid token): a body sent without
        # one is neither read nor parsed, whatever it holds.
        refusal = await self._token_refusal(scope, addressed, rid)
        if refusal is not None:
            await self._answer(scope, addressed, receive, send, started, rid, _refused(refusal))
            return
        read: list[Message] = []
        body = await _body(receive, read)
        question = _question(body) if body is not None else None
        if question is None:
            await self.app(scope, _replay(read, receive), send)
            return
        await self._answer(scope, addressed, receive, send, started, rid, self._asked(question))

    async def _token_refusal(self, scope: Scope, addressed: Scope, rid: str) -> Exception | None:
        """Why the request's token is not good (401; 429 when its address sent too many unknown
        ones, :mod:`portal.failed_lookups`; 503 when it cannot be checked), or None.

        Checked on ``addressed``, the scope's copy with the client address applied (the
        security log names who sent a bad token). An unexpected failure is returned too, to be
        raised where it is counted and answered."""
        token = request_id.current.set(rid)
        try:
            await bearer_known(Request(addressed))
        except Exception as exc:  # noqa: BLE001 - answered or raised by _answer
            return exc
        finally:
            request_id.current.reset(token)
        scope[KNOWN_OWNER] = addressed[KNOWN_OWNER]
        return None

    async def _answer(
        self,
        scope: Scope,
        addressed: Scope,
        receive: Receive,
        send: Send,
        started: float,
        rid: str,
        respond: Responder,
    ) -> None:
        guard.ClientAddress.carry(addressed, scope)
        token = request_id.current.set(rid)
        status = 500  # unless an answer starts: the server answers 500 for an app that fails
        try:
            response = await respond(Request(scope, receive))
            if self.route is not None:
                scope["route"] = self.route
            headers = headers_for(response.raw_headers, PATH)
            headers.append((observe.HEADER, rid.encode("ascii")))
            status = response.status_code
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
        finally:
            observe.counted(scope, status, started)
            request_id.current.reset(token)

    def _asked(self, question: VerifyRequest) -> Responder:
        async def respond(request: Request) -> Response:
            return await self._response(request, question)

        return respond

    async def _response(self, request: Request, question: VerifyRequest) -> Response:
        router: Router = request.app.state.router
        received = received_at(request)
        # A VIN's records are read by the rate limit's statement, in the same round trip.
        along = None
        if question.vin:
            along = RecordsAlong(normalize.vin(question.vin), router.deadline(received))
        try:
            principal = require(permissions.VERIFY, await principal_of(request, along))
            result = await router.verify(question, principal, "api", received, along)
            return Response(result.model_dump_json(), media_type="application/json")
        except Exception as exc:
            handled = await errors.handled(request, exc)
            if handled is None:
                raise  # the app's last guard answers it (portal.errors._unexpected)
            return handled


async def _body(receive: Receive, read: list[Message]) -> bytes | None:
    """The whole body (None if the client left first); every message read is kept in ``read``
    for a replay."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _question(body: bytes) -> VerifyRequest | None:
    """The request, when the body is one FastAPI would accept as is; None for anything else
    (FastAPI then gives its own answer). Parsed as FastAPI parses it: JSON to Python, then the
    model validated in Python mode."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can read
        return None
    if not isinstance(data, dict):
        return None
    try:
        return VerifyRequest.model_validate(data)
    except (ValidationError, RecursionError):
        return None


def _refused(refusal: Exception) -> Responder:
    async def respond(request: Request) -> Response:
        handled = await errors.handled(request, refusal)
        if handled is None:
            raise refusal  # the app's last guard answers it (portal.errors._unexpected)
        return handled

    return respond


def _replay(read: list[Message], receive: Receive) -> Receive:
    """A receive that hands out ``read`` again, then goes on with ``receive``."""
    pending = list(read)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
