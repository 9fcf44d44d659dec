"""Admin: people — add, unlock, reset the second factor, disable and enable (all logged)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import security_log, sessions, users
from portal.deps import DbSession, UserAdmin, client_address
from portal.errors import ApiError
from portal.models import ROLES, User
from portal.web import params
from portal.web.identity import now
from portal.web.render import flash, page, see_other, twin_get

router = APIRouter(include_in_schema=False)

TOTP_RESET = "totp_reset"
USER_DISABLED = "user_disabled"
USER_ENABLED = "user_enabled"


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


def _target(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise ApiError(404, "no such user")
    return user


@router.post("/admin/users/{user_id}/unlock")
def unlock(request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber) -> Response:
    with db.begin():
        user = _target(db, user_id)
        users.unlock(db, user.username, actor=me.username, source=client_address(request))
    return see_other("/admin/users")


@router.post("/admin/users/{user_id}/reset-totp")
def reset_totp(
    request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber
) -> Response:
    with db.begin():
        user = _target(db, user_id)
        user.totp_secret = None
        user.totp_enrolled = False
        sessions.forget_totp_step(db, user.id)
        sessions.end_all(db, user.id)
        _log(db, request, TOTP_RESET, user.username, me.username)
    return see_other("/admin/users")


@router.post("/admin/users/{user_id}/disable")
def disable(request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber) -> Response:
    with db.begin():
        user = _target(db, user_id)
        if user.id == me.user_id:
            raise ApiError(400, "you cannot disable your own account")
        user.disabled = True
        sessions.end_all(db, user.id)
        _log(db, request, USER_DISABLED, user.username, me.username)
    request.app.state.token_cache.clear()  # their API tokens stop now too
    return see_other("/admin/users")


@router.post("/admin/users/{user_id}/enable")
def enable(request: Request, db: DbSession, me: UserAdmin, user_id: params.RowNumber) -> Response:
    with db.begin():
        user = _target(db, user_id)
        user.disabled = False
        _log(db, request, USER_ENABLED, user.username, me.username)
    return see_other("/admin/users")


def _log(db: Session, request: Request, event: str, username: str, actor: str) -> None:
    security_log.record(
        db,
        event,
        username=username,
        detail=f"by {actor}",
        source=client_address(request),
        at=now(request),
    )
