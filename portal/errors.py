"""One JSON error shape for every error the portal answers, on every path:

``{"ok": false, "status": 422, "error": "one sentence", "errors": [{"field": "vin",
"message": "…"}]}`` — ``errors`` is empty when no particular field is at fault.

Browser pages may register ``app.state.html_error`` (a callable taking the request and the
:class:`ErrorBody`) to render the same error as HTML for requests that ask for HTML outside
``/api/``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from olv.db import is_connection_failure
from olv.logging import describe_exception

log = logging.getLogger(__name__)

_TITLES = {
    400: "bad request",
    401: "authentication required",
    403: "not allowed for your role",
    404: "not found",
    405: "method not allowed",
    413: "request too large",
    422: "invalid input",
    429: "too many requests",
    500: "internal error",
    503: "service unavailable",
}


# Requests that fail before any query is asked (credentials, pages) because the database is
# unreachable: told apart from a query's own 503, which the query log records.
DATABASE_DOWN = "cannot check the request: the state database is unavailable; try again"


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    ok: bool = False
    status: int
    error: str
    errors: list[FieldError] = []


class ApiError(Exception):
    """Raised anywhere in a request to answer with the error shape."""

    def __init__(
        self,
        status: int,
        error: str | None = None,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error or _TITLES.get(status, "error"))
        self.status = status
        self.error = error or _TITLES.get(status, "error")
        self.errors = list(errors)
        self.headers = headers


def invalid(field: str, message: str) -> ApiError:
    """A 422 that names the field at fault."""
    return ApiError(422, f"{field}: {message}", [FieldError(field=field, message=message)])


def field_name(loc: Sequence[str | int]) -> str:
    """``('body', 'items', 3, 'vin')`` → ``'items.3.vin'``; the whole body → ``'body'``."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error shape for ``statuses``."""
    return {s: {"model": ErrorBody, "description": _TITLES.get(s, "error")} for s in statuses}


def _respond(request: Request, body: ErrorBody, headers: dict[str, str] | None) -> Response:
    html: Callable[[Request, ErrorBody], Response] | None = getattr(
        request.app.state, "html_error", None
    )
    wants_html = "text/html" in request.headers.get("accept", "")
    if html is not None and wants_html and not request.url.path.startswith("/api/"):
        page = html(request, body)
        if body.status != 401:  # a sign-in redirect takes no Bearer challenge
            page.headers.update(headers or {})
        return page
    return JSONResponse(body.model_dump(), status_code=body.status, headers=headers)


async def respond(request: Request, exc: Exception) -> Response:
    """The answer for an :class:`ApiError`: the error shape, or its HTML page for a browser."""
    assert isinstance(exc, ApiError)
    if exc.status >= 500:
        # The portal's own fault or an outage (the state database down or slow, a cap reached):
        # an operator must see every one. The messages of 5xx errors are the portal's own
        # sentences, never input; the cause is given by type and place only.
        cause = exc.__cause__
        log.warning(
            "answered %d on %s: %s",
            exc.status,
            request.url.path,
            exc.error,
            extra={"status": exc.status, **_cause_fields(cause)},
        )
    body = ErrorBody(status=exc.status, error=exc.error, errors=exc.errors)
    return _respond(request, body, exc.headers)


def _cause_fields(cause: BaseException | None) -> dict[str, str]:
    if cause is None:
        return {}
    # A database error's SQLSTATE tells an outage (08…) from a refusal (26000: a prepared
    # statement lost behind a pooler) without quoting the statement.
    sqlstate = getattr(getattr(cause, "orig", None) or cause, "sqlstate", None)
    return {**describe_exception(cause), **({"sqlstate": sqlstate} if sqlstate else {})}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 400:
        # FastAPI's "error parsing the body" (e.g. not UTF-8): invalid input like any other.
        message = detail or "the body could not be read"
        body = ErrorBody(
            status=422, error=f"body: {message}", errors=[FieldError(field="body", message=message)]
        )
        return _respond(request, body, None)
    body = ErrorBody(status=exc.status_code, error=detail or _TITLES.get(exc.status_code, "error"))
    return _respond(request, body, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(
            # A body that is not JSON at all is located by character offset: name the body.
            field="body" if e.get("type") == "json_invalid" else field_name(e.get("loc", ())),
            message=str(e.get("msg", "invalid")),
        )
        for e in exc.errors()
    ]
    summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:3]) or "invalid input"
    return _respond(request, ErrorBody(status=422, error=summary, errors=errors), None)


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    if not is_connection_failure(exc):
        return await _unexpected(request, exc)
    # No bug: the database is down or failing over (a token, a sign-in, a page's read).
    log.warning(
        "state database unreachable; answering 503",
        extra={"path": request.url.path, **describe_exception(exc)},
    )
    return _respond(request, ErrorBody(status=503, error=DATABASE_DOWN), {"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The last guard: a bug must still answer in the one shape, without internals.
    # Type and place only: messages of library errors may quote a VIN or a policy number.
    log.error("unhandled error on %s", request.url.path, extra=describe_exception(exc))
    return _respond(request, ErrorBody(status=500, error=_TITLES[500]), None)


# The handlers by the class they answer, most specific first (Starlette's exception middleware
# looks them up along the class's MRO; these four share no base but Exception).
Handler = Callable[[Request, Exception], Awaitable[Response]]
_HANDLERS: tuple[tuple[type[Exception], Handler], ...] = (
    (ApiError, respond),
    (StarletteHTTPException, _http_error),
    (RequestValidationError, _validation_error),
    (DBAPIError, _database_error),
)


async def handled(request: Request, exc: Exception) -> Response | None:
    """The answer the app's handlers give ``exc``, for a path that runs outside FastAPI's
    routing (:mod:`portal.verify_path`); None for anything else, which the app's last guard
    (:func:`_unexpected`, in the server-error layer) answers when it is raised on."""
    for kind, handler in _HANDLERS:
        if isinstance(exc, kind):
            return await handler(request, exc)
    return None


def install(app: FastAPI) -> None:
    for kind, handler in _HANDLERS:
        app.add_exception_handler(kind, handler)
    app.add_exception_handler(Exception, _unexpected)
