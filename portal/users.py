"""User accounts: creation (``olv users add`` and the admin pages) and unlocking.

The login itself — lockout counting, TOTP, sessions — lives with the browser pages; this
module only keeps the rules that the command line and the pages share.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from olv import normalize
from olv.errors import OlvError
from portal import passwords, security_log
from portal.models import ROLES, User

USERNAME = re.compile(r"^[A-Za-z0-9._@-]{1,100}$")


class UserError(OlvError):
    """A user operation was refused (bad name, role, NAIC or password; unknown user)."""


def check_role(role: str, naic: str | None) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "insurer" and not naic:
        raise UserError("an insurer liaison needs --naic (the NAIC they speak for)")
    if role != "insurer" and naic:
        raise UserError("--naic is only for the insurer role")
    if naic and not normalize.is_naic(naic):
        raise UserError(f"NAIC {naic!r} must be five digits")


def new_user(username: str, role: str, naic: str | None, password_hash: str) -> User:
    """A new account's row, unchecked: no second factor yet, no failed logins, enabled."""
    return User(
        username=username,
        password_hash=password_hash,
        role=role,
        naic=naic,
        totp_enrolled=False,
        failed_logins=0,
        disabled=False,
        created_at=datetime.now(UTC),
    )


def add(
    session: Session,
    username: str,
    role: str,
    password: str,
    *,
    naic: str | None = None,
    actor: str | None = None,
    source: str | None = None,
) -> User:
    """Create a user (TOTP is enrolled at the first login). Raises :class:`UserError`."""
    if not USERNAME.match(username):
        raise UserError("user name: 1-100 letters, digits or . _ @ -")
    check_role(role, naic)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username!r} already exists")
    try:
        password_hash = passwords.hash_password(password, username)
    except passwords.WeakPasswordError as exc:
        raise UserError(str(exc)) from None
    user = new_user(username, role, naic, password_hash)
    session.add(user)
    detail = (
        f"role {role}" + (f", NAIC {naic}" if naic else "") + (f", by {actor}" if actor else "")
    )
    security_log.record(
        session, security_log.USER_ADDED, username=username, detail=detail, source=source
    )
    return user


def unlock(
    session: Session, username: str, *, actor: str | None = None, source: str | None = None
) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username!r}")
    user.locked_at = None
    user.failed_logins = 0
    user.first_failed_at = None
    security_log.record(
        session,
        security_log.USER_UNLOCKED,
        username=username,
        detail=f"by {actor}" if actor else "",
        source=source,
    )
    return user
