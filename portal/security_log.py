"""The security log: logins, failed logins, lockouts, token use and admin changes.

Entries name the account and the event, never a password, token or insured data. Every event
name the portal writes is defined here and nowhere else.

A name typed at sign-in that matches no account is not stored as typed (it may be a password
typed into the wrong field): :func:`unknown_name` stores a keyed hash of it instead, so that
repeated tries of one made-up name can still be counted and seen together.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from portal.models import SecurityLog

# Signing in and out (the login pages).
LOGIN_OK = "login"
LOGIN_FAILED = "login_failed"
LOGIN_LOCKED_OUT = "lockout"
LOGIN_REFUSED = "login_refused"  # locked, disabled or busy account, right or wrong password
TOTP_ENROLLED = "totp_enrolled"
TOTP_FAILED = "totp_failed"
LOGOUT = "logout"
SESSION_EXPIRED = "session_expired"
UNKNOWN_USER = "unknown user"  # the detail of a failed login for a name with no account

# Accounts and tokens (the admin pages and the command line).
TOKEN_CREATED = "token_created"
TOKEN_REVOKED = "token_revoked"
TOKEN_USED = "token_used"
TOKEN_REJECTED = "token_rejected"
USER_ADDED = "user_added"
USER_UNLOCKED = "user_unlocked"
USER_DISABLED = "user_disabled"
USER_ENABLED = "user_enabled"
TOTP_RESET = "totp_reset"
INSURER_CHANGED = "insurer_changed"
BOB_UPLOADED = "bob_uploaded"  # a book-of-business file uploaded on the web page
REGISTRATIONS_IMPORTED = "registrations_imported"

# The stored form of a name that matches no account: this prefix and a keyed hash.
UNKNOWN_NAME_PREFIX = "unknown:"


def unknown_name(tag: str) -> str:
    """How a sign-in name without an account is logged, from its keyed hash ``tag``
    (:meth:`portal.secret_key.SecretKey.tag`)."""
    return f"{UNKNOWN_NAME_PREFIX}{tag}"


def record(
    session: Session,
    event: str,
    *,
    username: str | None = None,
    detail: str = "",
    source: str | None = None,
    at: datetime | None = None,
) -> None:
    """Add one entry to ``session`` (the caller's transaction commits it); ``at`` defaults to
    now (the login pages pass their own clock, which tests replace)."""
    session.add(
        SecurityLog(
            at=at or datetime.now(UTC),
            event=event,
            username=username,
            detail=detail[:500],
            source=source[:64] if source else None,
        )
    )
