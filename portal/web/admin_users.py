"""Admin: people — add, unlock, reset the second factor, disable and enable (all logged)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import users
from portal.deps import DbSession, Principal, UserAdmin, client_address
from portal.errors import ApiError
from portal.models import ROLES, User
from portal.web import params
from portal.web.identity import now
from portal.web.render import flash, page, see_other, twin_get

router = APIRouter(include_in_schema=False)


def _user_rows(db: Session) -> list[dict[str, object]]:
    rows = db.scalars(select(User).order_by(User.username)).all()
    return [
        {
            "id": u.id,
            "username": u.username,
            "role": u.role,
            "naic": u.naic,
            "totp_enrolled": u.totp_enrolled,
            "locked": u.locked_at is not None,
            "disabled": u.disabled,
            "failed_logins": u.failed_logins,
            "last_login_at": u.last_login_at.isoformat(timespec="seconds")
            if u.last_login_at
            else None,
        }
        for u in rows
    ]


def _render(request: Request, db: Session, status: int = 200) -> Response:
    with db.begin():
        rows = _user_rows(db)
    return page(
        request, "admin_users.html", "Users", {"users": rows}, {"roles": ROLES}, status=status
    )


@twin_get(router, "/admin/users")
def list_users(request: Request, db: DbSession, me: UserAdmin) -> Response:
    return _render(request, db)


@router.post("/admin/users")
def add_user(
    request: Request,
    db: DbSession,
    me: UserAdmin,
    username: Annotated[str, Form(max_length=100)] = "",
    role: Annotated[str, Form(max_length=10)] = "",
    naic: Annotated[str, Form(max_length=5)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        with db.begin():
            users.add(
                db,
                username.strip(),
                role,
                password,
                naic=naic.strip() or None,
                actor=me.username,
                source=client_address(request),
            )
    except users.UserError as exc:
        flash(request, "error", f"Not added: {exc}.")
        return _render(request, db, 422)
    return see_other("/admin/users")


@router.post("/admin/users/{user_id}/unlock")
def unlock(request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber) -> Response:
    return _change(request, db, me, user_id, users.unlock)


@router.post("/admin/users/{user_id}/reset-totp")
def reset_totp(
    request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber
) -> Response:
    return _change(request, db, me, user_id, users.reset_second_factor)


@router.post("/admin/users/{user_id}/disable")
def disable(request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber) -> Response:
    if user_id == me.user_id:
        raise ApiError(400, "you cannot disable your own account")
    # Their API tokens stop with the next request in every process (portal.deps).
    return _change(request, db, me, user_id, users.disable)


@router.post("/admin/users/{user_id}/enable")
def enable(request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber) -> Response:
    return _change(request, db, me, user_id, users.enable)


def _change(
    request: Request,
    db: Session,
    me: Principal,
    user_id: int,
    operation: Callable[..., None],
) -> Response:
    """One of :mod:`portal.users`' account operations on the person ``user_id``."""
    with db.begin():
        user = db.get(User, user_id)
        if user is None:
            raise ApiError(404, "no such user")
        operation(db, user, actor=me.username, source=client_address(request), at=now(request))
    return see_other("/admin/users")
