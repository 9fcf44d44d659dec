"""The security log: logins, failed logins, lockouts, token use and admin changes.

Entries name the account and the event, never a password, token or insured data.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from portal.models import SecurityLog

# Event names used across the portal (pages add their own login events).
TOKEN_CREATED = "token_created"
TOKEN_REVOKED = "token_revoked"
TOKEN_USED = "token_used"
TOKEN_REJECTED = "token_rejected"
USER_ADDED = "user_added"
USER_UNLOCKED = "user_unlocked"
INSURER_CHANGED = "insurer_changed"
REGISTRATIONS_IMPORTED = "registrations_imported"


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
