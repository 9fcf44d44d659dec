"""The outermost layer of the portal (:class:`RequestObserver`): the request id, and each
answer counted and timed.

The id is the caller's ``X-Request-ID`` when it is well formed (:mod:`olv.request_id`), else a
new one. It is in every log line written while the request is handled, in the answer's
``X-Request-ID`` header, and in the header of every call to an insurer made for it
(:mod:`portal.insurer_client`), whose own logs then name it too.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from olv import request_id
from portal import metrics

HEADER = request_id.HEADER.lower().encode("ascii")  # as ASGI names headers


class RequestObserver:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = next((v for k, v in scope["headers"] if k == HEADER), None)
        rid = chosen(sent)
        token = request_id.current.set(rid)
        header = (HEADER, rid.encode("ascii"))
        status = 500  # unless an answer starts: the server answers 500 for an app that fails

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            counted(scope, status, started)
            request_id.current.reset(token)


def chosen(sent: bytes | None) -> str:
    """The request's id: the caller's ``X-Request-ID`` when well formed, else a new one."""
    rid = request_id.accept(sent.decode("latin-1") if sent is not None else None)
    return rid or request_id.new()


def counted(scope: Scope, status: int, started: float) -> None:
    """The answer counted and timed (from ``started``, ``time.perf_counter()``), by route."""
    route = scope.get("route")
    endpoint = getattr(route, "path", None) or metrics.OTHER
    metrics.answered(endpoint, scope["method"], status, time.perf_counter() - started)
