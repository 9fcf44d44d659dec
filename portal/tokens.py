"""API tokens: ``olv_<id>_<secret>``, shown once, stored only as the SHA-256 of the whole token.

Tokens carry 256 random bits, so a fast hash is enough (a slow password hash would cost every
API call tens of milliseconds without adding safety). The public ``id`` names the token in
lists and in ``olv tokens revoke``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from olv.db import as_utc
from olv.errors import OlvError
from portal import security_log
from portal.models import ApiToken, User

PREFIX = "olv_"
_SHAPE = re.compile(r"^olv_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
# last_used_at (and a "token_used" security-log entry) is written at most this often per token.
USE_RECORD_INTERVAL = timedelta(minutes=1)


class TokenError(OlvError):
    """A token operation could not be done (unknown user or token); the message says why."""


@dataclass(frozen=True)
class TokenOwner:
    """Who a valid token belongs to."""

    token_id: str
    user_id: int
    username: str
    role: str
    naic: str | None
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        """Expiry is a matter of time, not of a change: a cached owner checks it itself."""
        return self.expires_at is not None and self.expires_at <= now


def digest(secret: str) -> str:
    """The stored form of a bearer secret of 256 random bits (an API token, a session
    cookie): a fast hash is enough for so much entropy."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create(
    session: Session, username: str, days: int, *, source: str | None = None
) -> tuple[ApiToken, str]:
    """A new token for ``username``, valid ``days`` days; returns the row and the token text."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise TokenError(f"no user {username!r}")
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    row = ApiToken(
        id=token_id,
        user_id=user.id,
        token_hash=digest(token),
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(row)
    security_log.record(
        session,
        security_log.TOKEN_CREATED,
        username=username,
        detail=f"token {token_id}, expires in {days} days",
        source=source,
    )
    return row, token


def revoke(session: Session, token_id: str, *, source: str | None = None) -> ApiToken:
    """Revoke by id (the whole token text is accepted too: its id is read from it)."""
    match = _SHAPE.match(token_id)
    if match is not None:
        token_id = match.group(1)
    row = session.get(ApiToken, token_id)
    if row is None:
        raise TokenError(f"no token {token_id!r}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        owner = session.get(User, row.user_id)
        security_log.record(
            session,
            security_log.TOKEN_REVOKED,
            username=owner.username if owner else None,
            detail=f"token {token_id}",
            source=source,
        )
    return row


def well_shaped(token: str) -> bool:
    """Whether ``token`` has the shape of a token :func:`create` makes (only such a token is
    looked up)."""
    return _SHAPE.match(token) is not None


def authenticate(session: Session, token: str, *, source: str | None = None) -> TokenOwner | None:
    """The owner of a valid, unexpired, unrevoked token of an enabled user, else None.

    Records use in ``last_used_at`` and the security log at most once a minute per token;
    the caller commits.
    """
    match = _SHAPE.match(token)
    if match is None:
        return None
    row = session.get(ApiToken, match.group(1))
    if row is None or not hmac.compare_digest(row.token_hash, digest(token)):
        return None
    now = datetime.now(UTC)
    expires = as_utc(row.expires_at)
    if row.revoked_at is not None or (expires is not None and expires <= now):
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    last = as_utc(row.last_used_at)
    if last is None or now - last >= USE_RECORD_INTERVAL:
        row.last_used_at = now
        security_log.record(
            session,
            security_log.TOKEN_USED,
            username=user.username,
            detail=f"token {row.id}",
            source=source,
        )
    return TokenOwner(row.id, user.id, user.username, user.role, user.naic, expires)
