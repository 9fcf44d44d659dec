"""State portal tables (created by migration ``0003``; database rows only — the API's pydantic
types live in :mod:`portal.schemas` and the wire (SOAP) types in :mod:`portal.soap_wire`).

* ``insurers``       the registry: whom to ask for a NAIC, in which IICMVA version, over what TLS
* ``registrations``  plate + state → VIN (``olv registrations import``)
* ``users``          people and machine accounts, with their role and login-lockout counters
* ``api_tokens``     bearer tokens, stored only as hashes, with expiry and revocation
* ``query_log``      every verification asked (who, what, the answer), kept at least a year
* ``security_log``   logins, failures, lockouts, token use, admin changes
* ``insurer_calls``  every call to an insurer's service (for the compliance charts)
* ``portal_rate``    rate limits and sign-in throttles, shared by every portal process
                     (:mod:`portal.ratelimit`, migration ``0011``)
* ``portal_auth_version`` one number that moves whenever a token or a person changes in a way
                     that changes who a token is (migration ``0011``'s triggers; :mod:`portal.deps`)

No insured names or addresses are stored anywhere here.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from olv.db import Base, RowId
from portal.permissions import ROLES as ROLES  # the one list; re-exported for importers

CHANNELS = ("api", "page", "batch")


class Insurer(Base):
    """One insurer's verification service, as registered by ``olv insurers add``."""

    __tablename__ = "insurers"

    naic: Mapped[str] = mapped_column(String(5), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(500))
    version: Mapped[str] = mapped_column(String(8))
    accepts_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    client_cert: Mapped[str | None] = mapped_column(String(500))  # PEM file paths
    client_key: Mapped[str | None] = mapped_column(String(500))
    ca_bundle: Mapped[str | None] = mapped_column(String(500))
    timeout_seconds: Mapped[float | None] = mapped_column(Float)  # None: the whole budget
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Registration(Base):
    """A plate (normalized with ``olv.normalize.plate``) in a state, and the VIN it is on."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("plate", "state"), Index("ix_registrations_vin", "vin"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plate: Mapped[str] = mapped_column(String(12))
    state: Mapped[str] = mapped_column(String(2))
    vin: Mapped[str] = mapped_column(String(25))


class User(Base):
    """A person (or a DMV system's account) with one role; insurer liaisons carry their NAIC."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("username"),
        # The roles of portal.permissions (this text is what migration 0003 created).
        CheckConstraint(f"role IN ({', '.join(repr(r) for r in ROLES)})", name="role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(10))
    naic: Mapped[str | None] = mapped_column(String(5))
    totp_secret: Mapped[str | None] = mapped_column(String(200))  # sealed: portal.secret_key
    totp_enrolled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Lockout: failures counted inside a window that starts at the first one.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    first_failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    """A bearer token ``olv_<id>_<secret>``: only the secret's SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public, shown in lists
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class QueryLog(Base):
    """One verification: who asked, what, through which channel, and what came back."""

    __tablename__ = "query_log"
    __table_args__ = (
        Index("ix_query_log_at", "at"),
        Index("ix_query_log_username_at", "username", "at"),
        Index("ix_query_log_vin_at", "vin", "at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # time-ordered, unguessable
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    username: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str] = mapped_column(String(5))
    # what was asked
    vin: Mapped[str | None] = mapped_column(String(25))
    plate: Mapped[str | None] = mapped_column(String(12))
    plate_state: Mapped[str | None] = mapped_column(String(2))
    naic: Mapped[str | None] = mapped_column(String(5))
    policy_number: Mapped[str | None] = mapped_column(String(50))
    verification_date: Mapped[date | None] = mapped_column(Date)
    reason: Mapped[str | None] = mapped_column(String(6))
    # the answer
    http_status: Mapped[int] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(11))  # Confirmed | Unconfirmed
    verdict: Mapped[str | None] = mapped_column(String(16))
    reason_codes: Mapped[str] = mapped_column(String(60), default="")  # 00200809 names
    answered_naic: Mapped[str | None] = mapped_column(String(5))
    insurer: Mapped[str | None] = mapped_column(String(200))
    answered_policy_number: Mapped[str | None] = mapped_column(String(50))
    source: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float] = mapped_column(Float)


class SecurityLog(Base):
    """Logins, failed logins, lockouts, token use and admin changes (never a password)."""

    __tablename__ = "security_log"
    __table_args__ = (
        Index("ix_security_log_at", "at"),
        Index("ix_security_log_username_at", "username", "at"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event: Mapped[str] = mapped_column(String(40))
    username: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(String(500), default="")
    source: Mapped[str | None] = mapped_column(String(64))  # client address, or "cli"


class InsurerCall(Base):
    """One call to an insurer's service; the compliance charts aggregate these per day."""

    __tablename__ = "insurer_calls"
    __table_args__ = (
        # Covers everything the compliance report reads (migration 0007).
        Index("ix_insurer_calls_report", "naic", "at", "outcome", "latency_ms"),
        Index("ix_insurer_calls_at", "at"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    naic: Mapped[str] = mapped_column(String(5))
    # ok | timeout | refused | tls | http_error | fault | invalid | unavailable (SYSU/UREQ)
    # | cancelled (another insurer confirmed first)
    outcome: Mapped[str] = mapped_column(String(12))
    response_code: Mapped[str | None] = mapped_column(String(11))
    latency_ms: Mapped[float] = mapped_column(Float)
    query_id: Mapped[str | None] = mapped_column(String(32))


class RateState(Base):
    """One rate limit's state (:mod:`portal.ratelimit`): what ``key`` has left, and when."""

    __tablename__ = "portal_rate"
    # Every take rewrites its row: no index on what changes, and room on each page, so that
    # PostgreSQL rewrites it in place (migration 0014).
    __table_args__ = {"postgresql_with": {"fillfactor": 50}}

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    # Seconds since the epoch: the refill (or the window) is counted in SQL from it.
    updated_at: Mapped[float] = mapped_column(Float)


class AuthVersion(Base):
    """A single row whose ``version`` triggers move on every change to a token's revocation or
    expiry, or to a person's role, NAIC, name or disabled flag, and on deletes of either: a
    portal process that sees it move forgets the tokens it has cached."""

    __tablename__ = "portal_auth_version"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(RowId)
