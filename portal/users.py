"""User accounts and what administrators do to them: add, unlock, disable, enable and reset
the second factor — one function each, called by ``olv users`` and the admin pages alike, each
writing its security-log entry.

Counting failed sign-ins is :mod:`portal.lockout`; the sign-in pages are in :mod:`portal.web`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from olv import normalize
from olv.errors import OlvError
from portal import lockout, passwords, security_log, sessions
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


def find(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username!r}")
    return user


def unlock(
    session: Session,
    user: User,
    *,
    actor: str | None = None,
    source: str | None = None,
    at: datetime | None = None,
) -> None:
    """Lift a lockout and forget the failures counted."""
    lockout.unlock(session, user.id)
    _log(session, security_log.USER_UNLOCKED, user, actor, source, at)


def disable(
    session: Session,
    user: User,
    *,
    actor: str | None = None,
    source: str | None = None,
    at: datetime | None = None,
) -> None:
    """Stop an account: its sessions end now and its API tokens stop working (within a
    second in every portal process: see ``TOKEN_CACHE_SECONDS`` in :mod:`portal.app`)."""
    user.disabled = True
    sessions.end_all(session, user.id)
    _log(session, security_log.USER_DISABLED, user, actor, source, at)


def enable(
    session: Session,
    user: User,
    *,
    actor: str | None = None,
    source: str | None = None,
    at: datetime | None = None,
) -> None:
    user.disabled = False
    _log(session, security_log.USER_ENABLED, user, actor, source, at)


def reset_second_factor(
    session: Session,
    user: User,
    *,
    actor: str | None = None,
    source: str | None = None,
    at: datetime | None = None,
) -> None:
    """Forget the TOTP secret; the person enrols a new one at their next sign-in."""
    user.totp_secret = None
    user.totp_enrolled = False
    sessions.forget_totp_step(session, user.id)
    sessions.end_all(session, user.id)
    _log(session, security_log.TOTP_RESET, user, actor, source, at)


def _log(
    session: Session,
    event: str,
    user: User,
    actor: str | None,
    source: str | None,
    at: datetime | None,
) -> None:
    security_log.record(
        session,
        event,
        username=user.username,
        detail=f"by {actor}" if actor else "",
        source=source,
        at=at,
    )
