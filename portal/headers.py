"""Headers on every answer the portal gives (:class:`ResponseHeaders`, outside every layer but
:mod:`portal.observe`, so that the request guard's own refusals carry them too).

- Nothing is kept by browsers or shared caches (``Cache-Control: no-store``): answers name
  vehicles, plates and people. Only the static files (style sheet) may be cached.
- HTML pages add :data:`PAGE_HEADERS`: nothing loaded or run from elsewhere (the pages use no
  script at all), no framing by other sites (clickjacking), no sniffing, no referrer leaks.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PAGE_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
NO_STORE = (b"cache-control", b"no-store")
CACHEABLE_PREFIX = "/static/"


def completed(headers: list[tuple[bytes, bytes]], path: str) -> list[tuple[bytes, bytes]]:
    """An answer's headers with those every answer to ``path`` carries (``headers`` is
    extended in place and returned)."""
    names = {k.lower() for k, _ in headers}
    if not path.startswith(CACHEABLE_PREFIX) and b"cache-control" not in names:
        headers.append(NO_STORE)
    content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
    if content_type.startswith(b"text/html"):
        headers.extend(PAGE_HEADERS)
    return headers


class ResponseHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = completed(list(message.get("headers", [])), path)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
