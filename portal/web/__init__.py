"""The portal's browser pages: server-rendered Jinja2, no JavaScript, one module per concern.

:data:`ROUTERS` and :func:`install` are picked up by ``portal.routes`` (and so by
``create_app``): the install step adds the cross-origin (CSRF) check for every state-changing
request, the session-cookie principal and the HTML rendering of errors.
"""

from __future__ import annotations

from anyio import CapacityLimiter
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from portal import card_check, permissions
from portal.csrf import CrossOriginProtection
from portal.deps import PUBLIC_THREADS
from portal.errors import ErrorBody
from portal.guard import Upload
from portal.web import (
    admin_insurers,
    admin_tokens,
    admin_users,
    auth,
    batch,
    bob,
    cards,
    compliance,
    history,
    iies,
    iies_reports,
    query,
)
from portal.web.identity import resolve_session
from portal.web.render import error_page

ROUTERS: list[APIRouter] = [
    auth.router,
    query.router,
    cards.router,
    batch.router,
    history.router,
    bob.router,
    compliance.router,
    admin_insurers.router,
    admin_users.router,
    admin_tokens.router,
    iies.router,
    iies_reports.router,
]


def html_error(request: Request, body: ErrorBody) -> Response:
    """Errors on pages: a sign-in redirect for 401, a readable page for the rest."""
    if body.status == 401:
        return RedirectResponse("/login", status_code=303)
    return error_page(request, body.status, body.error)


def install(app: FastAPI) -> None:
    app.add_middleware(CrossOriginProtection)
    app.state.principal_resolvers.append(resolve_session)
    app.state.html_error = html_error
    app.state.public_lane = CapacityLimiter(PUBLIC_THREADS)
    compliance.install(app)
    web = app.state.portal_settings
    # The request guard caps these bodies and checks the sender and their role before reading
    # them.
    app.state.upload_limits.update(
        {
            "/batch": Upload(
                web.batch_max_rows * batch.MAX_BYTES_PER_ROW, permissions.VERIFY_BATCH
            ),
            "/bob/upload": Upload(web.max_upload_mb * bob.CHUNK, permissions.BOOK_OF_BUSINESS),
            cards.PAGE_PATH: Upload(card_check.MAX_PHOTO_BYTES, permissions.CHECK_CARDS),
            cards.PAGE_PATH + ".json": Upload(card_check.MAX_PHOTO_BYTES, permissions.CHECK_CARDS),
            card_check.API_PATH: Upload(card_check.MAX_PHOTO_BYTES, permissions.CHECK_CARDS),
        }
    )
