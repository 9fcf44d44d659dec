"""Who is using the browser: the session cookie, turned into the portal's ``Principal``.

:func:`resolve_session` is registered in ``app.state.principal_resolvers``, so the pages and
the JSON API (called from a signed-in browser) go through the same ``permitted`` checks as
token holders. Tests replace the clock with ``app.state.clock``.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import Request, Response

from portal import sessions
from portal.deps import Principal, client_address, within_budget
from portal.failed_lookups import FailedLookups
from portal.models import User

COOKIE = "olv_session"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def now(request: Request) -> datetime:
    clock: sessions.Clock = getattr(request.app.state, "clock", sessions.utc_now)
    return clock()


def is_loopback(request: Request) -> bool:
    host = (request.url.hostname or "").lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def set_cookie(request: Request, response: Response, token: str) -> None:
    """``Secure`` except when the portal is reached on loopback (the demo, tests); never
    readable by scripts; never sent with a request that another site started. A cookie the
    portal issues passes its address's failed look-up throttle (:mod:`portal.failed_lookups`)."""
    failures: FailedLookups = request.app.state.failed_lookups
    failures.passed(token)
    response.set_cookie(
        COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or not is_loopback(request),
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or not is_loopback(request),
    )


def _resolve(request: Request, token: str) -> tuple[Principal | None, bool]:
    """The session's signed-in person (None when it is not signed in all the way), and
    whether the cookie found a live session at all."""
    with request.app.state.sessions() as db, db.begin():
        current = sessions.load(db, token, now(request))
        if current is None:
            return None, False
        if current.stage != sessions.STAGE_FULL:
            return None, True
        user = db.get(User, current.user_id)
        if user is None or user.disabled:
            sessions.end(db, token)
            return None, True
        return Principal(user.id, user.username, user.role, user.naic, "session"), True


def cookie_unread(request: Request) -> bool:
    """Whether the request's session cookie is to be taken as none, without a read: its
    address has failed too many look-ups lately (:mod:`portal.failed_lookups`) and this
    process has not seen the cookie find a live session."""
    token = request.cookies.get(COOKIE)
    if not token:
        return False
    failures: FailedLookups = request.app.state.failed_lookups
    return not failures.vouched(token) and failures.over(client_address(request))


def cookie_read(request: Request, found: bool) -> None:
    """Count the look-up of the request's session cookie for its address: one that did not
    find the session it was sent for costs the address an allowance, one that found it
    vouches for the cookie."""
    token = request.cookies.get(COOKIE)
    if not token:
        return
    failures: FailedLookups = request.app.state.failed_lookups
    if found:
        failures.passed(token)
    else:
        failures.failed(client_address(request))


async def resolve_session(request: Request) -> Principal | None:
    """The signed-in person of the request's session cookie; None without a live one. A
    cookie that finds no live session counts against its address, and once the address has
    failed too often its unknown cookies count as none (:func:`cookie_unread`)."""
    token = request.cookies.get(COOKIE)
    if not token or cookie_unread(request):
        return None  # not read: as if there were no cookie (the pages offer the sign-in form)
    principal, found = await within_budget(request, _resolve, request, token)
    cookie_read(request, found)
    return principal
