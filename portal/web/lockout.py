"""Counting failed logins: 5 failures within 15 minutes lock the account (SPEC §5, CJIS 5.5.3).

The window starts at the first failure; a success, or a failure after the window has passed,
starts the count afresh. A locked account stays locked — a right password does not open it —
until ``olv users unlock`` or an administrator unlocks it. A wrong second-factor code counts as
a failed login too, or the six digits could be guessed at leisure behind a known password.

Separately, every login attempt for one account name is rate-limited (``ATTEMPTS_PER_MINUTE``),
and so is every attempt from one client address over all names (``SOURCE_ATTEMPTS_PER_MINUTE``),
both counted from the security log, so they hold across worker processes and for names that
do not exist. Names without an account cannot lock, but after 5 failures in 15 minutes they
get the lockout message, so that the message does not tell which names are accounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from olv.db import as_utc
from portal.models import SecurityLog, User

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
ATTEMPTS_PER_MINUTE = 10
# Sign-in attempts per client address a minute, over all names: a spray of many names from
# one place. High enough for a police station's officers behind one address.
SOURCE_ATTEMPTS_PER_MINUTE = 60

# Security-log events written by the login pages.
LOGIN_OK = "login"
LOGIN_FAILED = "login_failed"
LOGIN_LOCKED_OUT = "lockout"
LOGIN_REFUSED = "login_refused"  # locked or disabled account, right or wrong password
TOTP_ENROLLED = "totp_enrolled"
TOTP_FAILED = "totp_failed"
LOGOUT = "logout"
SESSION_EXPIRED = "session_expired"
ATTEMPT_EVENTS = (LOGIN_OK, LOGIN_FAILED, LOGIN_REFUSED, TOTP_FAILED)
UNKNOWN_USER = "unknown user"  # the detail of a failed login for a name with no account


def is_locked(user: User) -> bool:
    return user.locked_at is not None


def record_failure(user: User, now: datetime) -> bool:
    """Count one failure; True when this one locked the account."""
    if user.first_failed_at is None or now - as_utc(user.first_failed_at) >= FAILURE_WINDOW:
        user.first_failed_at = now
        user.failed_logins = 1
    else:
        user.failed_logins = (user.failed_logins or 0) + 1
    if user.failed_logins >= MAX_FAILURES and user.locked_at is None:
        user.locked_at = now
        return True
    return False


def clear_failures(user: User) -> None:
    user.failed_logins = 0
    user.first_failed_at = None


def unlock(user: User) -> None:
    user.locked_at = None
    clear_failures(user)


def too_many_attempts(db: Session, username: str, now: datetime) -> bool:
    return _attempts(db, now, SecurityLog.username == username) >= ATTEMPTS_PER_MINUTE


def too_many_from(db: Session, source: str | None, now: datetime) -> bool:
    """Over the per-address limit; an unknown address (a proxy that forwarded none) is one."""
    where = SecurityLog.source.is_(None) if source is None else SecurityLog.source == source
    return _attempts(db, now, where) >= SOURCE_ATTEMPTS_PER_MINUTE


def unknown_name_failures(db: Session, username: str, now: datetime) -> int:
    """Failed logins for a name with no account within the failure window (this one included)."""
    return _count(
        db,
        SecurityLog.username == username,
        SecurityLog.event == LOGIN_FAILED,
        SecurityLog.detail == UNKNOWN_USER,
        SecurityLog.at > now - FAILURE_WINDOW,
    )


def _attempts(db: Session, now: datetime, who: ColumnElement[bool]) -> int:
    """Sign-in attempts of any outcome within the last minute."""
    return _count(
        db,
        who,
        SecurityLog.event.in_(ATTEMPT_EVENTS),
        SecurityLog.at > now - timedelta(minutes=1),
    )


def _count(db: Session, *where: ColumnElement[bool]) -> int:
    """Security-log entries matching every condition."""
    return db.scalar(select(func.count()).select_from(SecurityLog).where(*where)) or 0
