"""Server-side browser sessions (table ``portal_session``, migration ``0004``).

The cookie carries only a random token; the database keeps its SHA-256, so a copy of the table
cannot be replayed as cookies. A session ends after 30 minutes without a request or 12 hours
after the password was entered, whichever comes first (CJIS Security Policy 5.5.5 and the
portal's SPEC §5), and when the person logs out, is disabled, unlocked or has the second factor
reset by an administrator.

A session starts at stage ``password`` (the password was right, the second factor is still to
come) and is replaced by a fresh token at stage ``full`` once the TOTP code is right, so a token
seen before the second factor is worth nothing afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from olv.db import Base, as_utc, changed_rows
from portal.tokens import digest

IDLE_LIMIT = timedelta(minutes=30)
ABSOLUTE_LIMIT = timedelta(hours=12)
# Writing last_seen_at on every request would make every page view a write; a minute of
# slack on a 30-minute limit costs nothing.
TOUCH_INTERVAL = timedelta(seconds=60)

STAGE_PASSWORD = "password"
STAGE_FULL = "full"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class WebSession(Base):
    __tablename__ = "portal_session"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The TOTP secret shown during enrolment; it becomes the person's only once a code from it
    # has been entered, so an abandoned enrolment changes nothing.
    enrol_secret: Mapped[str | None] = mapped_column(String(200))  # sealed


class TotpStep(Base):
    """The last TOTP time step each person used: a code is good once (RFC 6238 §5.2)."""

    __tablename__ = "portal_totp_step"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    last_step: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


@dataclass(frozen=True)
class Current:
    """A live session as the pages see it."""

    token: str
    user_id: int
    stage: str
    created_at: datetime
    enrol_secret: str | None


def create(
    db: Session, user_id: int, stage: str, now: datetime, created_at: datetime | None = None
) -> str:
    """A new session; returns the token for the cookie (the only place it exists in clear)."""
    token = secrets.token_urlsafe(32)
    db.add(
        WebSession(
            token_hash=digest(token),
            user_id=user_id,
            stage=stage,
            created_at=created_at or now,
            last_seen_at=now,
        )
    )
    db.flush()
    return token


def expired(created_at: datetime, last_seen_at: datetime, now: datetime) -> bool:
    return now - as_utc(last_seen_at) >= IDLE_LIMIT or now - as_utc(created_at) >= ABSOLUTE_LIMIT


def load(db: Session, token: str | None, now: datetime) -> Current | None:
    """The live session for a cookie token, touched; None (and the row gone) when expired."""
    if not token or len(token) > 100:
        return None
    row = db.get(WebSession, digest(token))
    if row is None:
        return None
    if expired(row.created_at, row.last_seen_at, now):
        db.delete(row)
        db.flush()
        return None
    if now - as_utc(row.last_seen_at) >= TOUCH_INTERVAL:
        row.last_seen_at = now
        db.flush()
    return Current(token, row.user_id, row.stage, as_utc(row.created_at), row.enrol_secret)


def set_enrol_secret(db: Session, token: str, secret: str) -> None:
    row = db.get(WebSession, digest(token))
    if row is not None:
        row.enrol_secret = secret
        db.flush()


def promote(db: Session, current: Current, now: datetime) -> str:
    """Replace a ``password`` session by a ``full`` one with a new token (same start time)."""
    end(db, current.token)
    return create(db, current.user_id, STAGE_FULL, now, created_at=current.created_at)


def end(db: Session, token: str) -> None:
    db.execute(delete(WebSession).where(WebSession.token_hash == digest(token)))


def end_all(db: Session, user_id: int) -> int:
    """End every session of a person (disabled, unlocked, second factor reset)."""
    return changed_rows(db.execute(delete(WebSession).where(WebSession.user_id == user_id)))


def purge_expired(db: Session, now: datetime) -> int:
    result = db.execute(
        delete(WebSession).where(
            (WebSession.last_seen_at <= now - IDLE_LIMIT)
            | (WebSession.created_at <= now - ABSOLUTE_LIMIT)
        )
    )
    return changed_rows(result)


def last_totp_step(db: Session, user_id: int) -> int | None:
    return db.scalar(select(TotpStep.last_step).where(TotpStep.user_id == user_id))


def claim_totp_step(db: Session, user_id: int, step: int) -> bool:
    """Record ``step`` as the user's last used code, unless that or a later one already is;
    False then. One conditional write, so that two requests racing with the same code cannot
    both pass (the database orders them)."""
    moved = db.execute(
        update(TotpStep)
        .where(TotpStep.user_id == user_id, TotpStep.last_step < step)
        .values(last_step=step)
    )
    if changed_rows(moved):
        return True
    if db.get(TotpStep, user_id) is not None:
        return False  # this code, or a later one, was used already
    try:
        with db.begin_nested():
            db.add(TotpStep(user_id=user_id, last_step=step))
    except IntegrityError:
        return False  # a racing request recorded its first code first
    return True


def forget_totp_step(db: Session, user_id: int) -> None:
    db.execute(delete(TotpStep).where(TotpStep.user_id == user_id))
