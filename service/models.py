"""Insurer policy store and audit trail (database rows only; wire types live elsewhere)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from olv.db import Base
from olv.iicmva import VEHICLE_SPECIFIC


class Policy(Base):
    __tablename__ = "policy"
    __table_args__ = (
        UniqueConstraint("naic", "policy_key"),
        # What a verification reads, from the index alone (migration 0012).
        Index(
            "ix_policy_lookup",
            "naic",
            "policy_key",
            "id",
            "policy_type",
            "pending_review",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    naic: Mapped[str] = mapped_column(String(5))
    policy_number: Mapped[str] = mapped_column(String(50))  # as written by the insurer
    policy_key: Mapped[str] = mapped_column(String(50))  # olv.normalize.policy_key of it
    policy_type: Mapped[str] = mapped_column(String(2), default=VEHICLE_SPECIFIC)
    pending_review: Mapped[bool] = mapped_column(Boolean, default=False)

    coverages: Mapped[list[Coverage]] = relationship(
        back_populates="policy", cascade="all, delete-orphan", passive_deletes=True
    )


class Coverage(Base):
    """One continuous coverage period of one vehicle (or, for NS policies, of the policy)."""

    __tablename__ = "coverage"
    # A policy's periods and a VIN's periods, read from the indexes alone (migration 0012).
    __table_args__ = (
        Index(
            "ix_coverage_policy_periods",
            "policy_id",
            "vin",
            "effective_date",
            "expiration_date",
            "cancel_date",
        ),
        Index(
            "ix_coverage_vin_periods",
            "naic",
            "vin",
            "policy_id",
            "effective_date",
            "expiration_date",
            "cancel_date",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policy.id", ondelete="CASCADE"))
    naic: Mapped[str] = mapped_column(String(5))  # copied from the policy for the VIN index
    vin: Mapped[str | None] = mapped_column(String(25))  # olv.normalize.vin; None on NS rows
    effective_date: Mapped[date] = mapped_column(Date)
    expiration_date: Mapped[date | None] = mapped_column(Date)
    cancel_date: Mapped[date | None] = mapped_column(Date)

    policy: Mapped[Policy] = relationship(back_populates="coverages")


class AuditWrite(Base):
    """The id of an audit write that committed, kept until the writer's next write
    (:mod:`service.audit`: a write whose commit went unanswered is looked up, not repeated)."""

    __tablename__ = "audit_write"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditRecord(Base):
    __tablename__ = "audit_record"
    __table_args__ = (Index("ix_audit_record_vin_at", "vin", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    requester: Mapped[str] = mapped_column(String(300))
    version: Mapped[str] = mapped_column(String(8))
    naic: Mapped[str | None] = mapped_column(String(50))
    policy_key: Mapped[str | None] = mapped_column(String(50))
    vin: Mapped[str | None] = mapped_column(String(50))
    verification_date: Mapped[str | None] = mapped_column(String(40))
    request_reason: Mapped[str | None] = mapped_column(String(40))
    response_code: Mapped[str] = mapped_column(String(11))
    reason_codes: Mapped[str] = mapped_column(String(40), default="")
    latency_ms: Mapped[float] = mapped_column(Float)
