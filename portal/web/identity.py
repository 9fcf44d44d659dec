"""Who is using the browser: the session cookie, turned into the portal's ``Principal``.

:func:`resolve_session` is registered in ``app.state.principal_resolvers``, so the pages and
the JSON API (called from a signed-in browser) go through the same ``permitted`` checks as
token holders. Tests replace the clock with ``app.state.clock``.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import Request, Response

from portal import sessions
from portal.deps import Principal, within_budget
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
    readable by scripts; never sent with a request that another site started."""
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


def _resolve(request: Request, token: str) -> Principal | None:
    with request.app.state.sessions() as db, db.begin():
        current = sessions.load(db, token, now(request))
        if current is None or current.stage != sessions.STAGE_FULL:
            return None
        user = db.get(User, current.user_id)
        if user is None or user.disabled:
            sessions.end(db, token)
            return None
        return Principal(user.id, user.username, user.role, user.naic, "session")


async def resolve_session(request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    return await within_budget(request, _resolve, request, token)
