"""Counting failed sign-ins: 5 failures within 15 minutes lock the account (SPEC §5, CJIS 5.5.3).

The window starts at the first failure; a success, or a failure after the window has passed,
starts the count afresh. A locked account stays locked — a right password does not open it —
until ``olv users unlock`` or an administrator unlocks it. A wrong second-factor code counts as
a failed login too, or the six digits could be guessed at leisure behind a known password.

The count is taken *before* a password or code is checked, in one conditional ``UPDATE``
(:func:`claim_attempt`): an attempt counts as a failure until it is known to be right
(:func:`release_attempt`, :func:`clear_failures`). So however many attempts race, at most
``MAX_FAILURES`` passwords or codes are ever checked before the account locks; the database
orders the updates (a row lock on PostgreSQL, the write lock on SQLite).

Separately, every sign-in attempt for one account name is rate-limited
(``ATTEMPTS_PER_MINUTE``), and so is every attempt from one client address over all names
(``SOURCE_ATTEMPTS_PER_MINUTE``): each is a window of a minute in the shared rate-limit table
(:mod:`portal.ratelimit`), checked and counted in one statement, so that they hold across
processes and hosts, for names that do not exist, and however many attempts race. The
per-address limit is checked first, so a flood from one address is refused before it costs a
password hash. Names without an account cannot lock, but after 5 failures in 15 minutes they
get the lockout message, so that the message does not tell which names are accounts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, func, or_, select, update
from sqlalchemy.orm import Session

from portal import security_log
from portal.models import SecurityLog, User
from portal.ratelimit import Window, within_window

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
ATTEMPTS_PER_MINUTE = 10
# Sign-in attempts per client address a minute, over all names: a spray of many names from
# one place. High enough for a police station's officers behind one address.
SOURCE_ATTEMPTS_PER_MINUTE = 60
RATE_WINDOW = timedelta(minutes=1)


def is_locked(user: User) -> bool:
    return user.locked_at is not None


def claim_attempt(db: Session, user_id: int, now: datetime) -> int | None:
    """Count one attempt as a failure before it is checked; its number within the window,
    or None when the account is locked or already has ``MAX_FAILURES`` attempts counted (the
    attempt must then be refused unchecked). The caller commits before checking a password,
    so that the slow hash holds no lock."""
    failed = func.coalesce(User.failed_logins, 0)
    fresh = or_(User.first_failed_at.is_(None), User.first_failed_at <= now - FAILURE_WINDOW)
    claimed = db.execute(
        update(User)
        .where(User.id == user_id, User.locked_at.is_(None), or_(fresh, failed < MAX_FAILURES))
        .values(
            failed_logins=case((fresh, 1), else_=failed + 1),
            first_failed_at=case((fresh, now), else_=User.first_failed_at),
        )
        .returning(User.failed_logins)
        .execution_options(synchronize_session=False)
    ).scalar()
    return claimed


def release_attempt(db: Session, user_id: int) -> None:
    """Uncount an attempt whose password was right (the second factor is still to come)."""
    db.execute(
        update(User)
        .where(User.id == user_id, User.failed_logins > 0)
        .values(failed_logins=User.failed_logins - 1)
        .execution_options(synchronize_session=False)
    )


def lock_if_due(db: Session, user_id: int, now: datetime) -> bool:
    """Lock the account when ``MAX_FAILURES`` failures are counted in the window; True when
    this call locked it (exactly one of racing callers)."""
    locked = db.execute(
        update(User)
        .where(
            User.id == user_id,
            User.locked_at.is_(None),
            User.failed_logins >= MAX_FAILURES,
            User.first_failed_at > now - FAILURE_WINDOW,
        )
        .values(locked_at=now)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    return locked is not None


def is_locked_now(db: Session, user_id: int) -> bool:
    """Read afresh (the caller's ``User`` may predate a racing attempt's lock)."""
    return db.scalar(select(User.locked_at).where(User.id == user_id)) is not None


def clear_failures(db: Session, user_id: int) -> None:
    db.execute(
        update(User)
        .where(User.id == user_id)
        .values(failed_logins=0, first_failed_at=None)
        .execution_options(synchronize_session=False)
    )


def unlock(db: Session, user_id: int) -> None:
    db.execute(
        update(User)
        .where(User.id == user_id)
        .values(locked_at=None, failed_logins=0, first_failed_at=None)
        .execution_options(synchronize_session=False)
    )


def attempt_from(db: Session, source: str | None, now: datetime) -> bool:
    """Count a sign-in attempt from ``source`` (an unknown address, when a proxy forwarded
    none, is one); False, and nothing counted, when over the per-address limit."""
    window = Window(SOURCE_ATTEMPTS_PER_MINUTE, RATE_WINDOW.total_seconds())
    return within_window(db, f"signin-from:{source or '-'}", window, now.timestamp())


def attempt_for(db: Session, logged_name: str, now: datetime) -> bool:
    """Count a sign-in attempt (a password or a second-factor code) for ``logged_name``, as
    the security log stores it; False, and nothing counted, when over the per-name limit."""
    window = Window(ATTEMPTS_PER_MINUTE, RATE_WINDOW.total_seconds())
    return within_window(db, f"signin-name:{logged_name}", window, now.timestamp())


def unknown_name_failures(db: Session, logged_name: str, now: datetime) -> int:
    """Failed logins for a name with no account within the failure window."""
    return _count(
        db,
        SecurityLog.username == logged_name,
        SecurityLog.event == security_log.LOGIN_FAILED,
        SecurityLog.detail == security_log.UNKNOWN_USER,
        SecurityLog.at > now - FAILURE_WINDOW,
    )


def _count(db: Session, *where: ColumnElement[bool]) -> int:
    """Security-log entries matching every condition."""
    return db.scalar(select(func.count()).select_from(SecurityLog).where(*where)) or 0
