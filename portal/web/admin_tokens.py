"""Admin: API tokens — list, create (the token is shown once, on the answer page) and revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from olv.db import as_utc
from portal import tokens
from portal.deps import DbSession, TokenAdmin, client_address
from portal.models import ApiToken, User
from portal.web.identity import now
from portal.web.render import flash, page, see_other, twin_get

router = APIRouter(include_in_schema=False)


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def _state(row: ApiToken, at: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    expires = row.expires_at
    if expires is not None and as_utc(expires) <= at:
        return "expired"
    return "active"


def _context(db: Session, at: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = db.execute(
        select(ApiToken, User.username, User.role)
        .join(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.created_at.desc())
    ).all()
    data = {
        "tokens": [
            {
                "id": t.id,
                "username": username,
                "role": role,
                "created_at": _stamp(t.created_at),
                "expires_at": _stamp(t.expires_at),
                "last_used_at": _stamp(t.last_used_at),
                "state": _state(t, at),
            }
            for t, username, role in rows
        ]
    }
    usernames = db.scalars(
        select(User.username).where(User.disabled.is_(False)).order_by(User.username)
    )
    return data, {"usernames": list(usernames)}


def _render(
    request: Request, db: Session, *, new_token: dict[str, str] | None = None, status: int = 200
) -> Response:
    settings = request.app.state.portal_settings
    with db.begin():
        data, view = _context(db, now(request))
    view |= {"new_token": new_token, "default_days": settings.token_days}
    return page(request, "admin_tokens.html", "API tokens", data, view, status=status)


@twin_get(router, "/admin/tokens")
def list_tokens(request: Request, db: DbSession, me: TokenAdmin) -> Response:
    return _render(request, db)


@router.post("/admin/tokens")
def create_token(
    request: Request,
    db: DbSession,
    me: TokenAdmin,
    username: Annotated[str, Form(max_length=100)] = "",
    days: Annotated[int, Form(ge=1, le=3650)] = 90,
) -> Response:
    try:
        with db.begin():
            row, token = tokens.create(db, username, days, source=client_address(request))
            token_id = row.id
    except tokens.TokenError as exc:
        flash(request, "error", f"No token created: {exc}.")
        return _render(request, db, status=422)
    # Shown on this answer only (never stored, never in a URL); the page is not cached.
    return _render(request, db, new_token={"id": token_id, "username": username, "token": token})


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token(request: Request, db: DbSession, me: TokenAdmin, token_id: str) -> Response:
    try:
        with db.begin():
            tokens.revoke(db, token_id, source=client_address(request))
    except tokens.TokenError as exc:
        flash(request, "error", str(exc))
        return _render(request, db, status=404)
    # Refused from the next request on, in every process (portal.deps, the auth version).
    return see_other("/admin/tokens")
