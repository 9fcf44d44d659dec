"""``/metrics`` and ``/readyz`` of the SOAP service (``/healthz``, "the process answers", is
answered with the SOAP paths in :mod:`service.soap_app`).

- ``/readyz``: 200 when the database answers ``SELECT 1`` within a second, else 503 — within
  that second, also when the database hangs (:mod:`olv.readiness`).
- ``/metrics``: every worker's values, to sources in ``OLV_METRICS_NETWORKS`` only (403 for
  anyone else, :func:`olv.metrics.may_scrape`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqlalchemy import Engine

from olv import forwarding, metrics
from olv.config import Settings
from olv.readiness import Readiness

PATHS = frozenset({"/metrics", "/readyz"})

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Probes:
    def __init__(self, settings: Settings, engine: Callable[[], Engine]) -> None:
        self.settings = settings
        self._engine = engine  # the worker's engine, opened on first use
        self._readiness: Readiness | None = None

    async def answer(self, scope: MutableMapping[str, Any], send: Send) -> None:
        if scope["path"] == "/readyz":
            if self._readiness is None:
                self._readiness = Readiness(self._engine())
            if await self._readiness.ready():
                await _reply(send, 200, b"ready\n")
            else:
                await _reply(send, 503, b"the database does not answer\n")
            return
        client = scope.get("client") or ("", 0)
        environ = forwarding.asgi_environ(client[0], scope.get("headers", []))
        if not metrics.may_scrape(environ, self.settings):
            await _reply(send, 403, b"metrics are for the metrics networks only\n")
            return
        await _reply(send, 200, metrics.exposition(), metrics.CONTENT_TYPE)


async def _reply(
    send: Send, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8"
) -> None:
    headers = [
        (b"content-type", ctype.encode("latin-1")),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
