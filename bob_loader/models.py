"""State-side book-of-business storage (tables created by migration ``0002``).

How a master is replaced atomically and cheaply (a generation swap):

* every accepted file's records go into ``bob_record`` tagged with the file's id;
* ``bob_current`` holds, per NAIC, the id of the file that is that NAIC's master;
* a load writes its records and moves the NAICs' pointers in ONE transaction, so readers (and a
  crash at any moment) see either the old generation or the new one, never a mix;
* the superseded generation is deleted afterwards in a separate transaction. If that clean-up
  is killed, the leftover rows are invisible (no pointer names them) and the next load of that
  NAIC removes them.

Every reader must therefore join ``bob_record`` with ``bob_current`` on ``(naic, file_id)``;
:mod:`bob_loader.lookup` does that for the CLI and the portal.

No insured names or addresses are stored: the state needs the BoB only to know which insurer
and policy to ask about a VIN, and the verification answer never carries them (SPEC §1).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from olv.db import Base, RowId

FILE_STATUSES = ("loading", "accepted", "rejected")


class BobFile(Base):
    """One received file; the checksum makes a second delivery of the same bytes a duplicate."""

    __tablename__ = "bob_file"
    __table_args__ = (
        UniqueConstraint("sha256"),
        CheckConstraint("status IN ('loading', 'accepted', 'rejected')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    naics: Mapped[str] = mapped_column(Text, default="")  # comma-separated, sorted
    account: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text)
    records: Mapped[int] = mapped_column(Integer, default=0)  # records in the file
    loaded: Mapped[int] = mapped_column(Integer, default=0)  # records that became master data
    errors: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BobRecord(Base):
    """One master record. No foreign key to ``bob_file``: a per-row constraint check would
    slow bulk loads down, and only the loader writes or deletes these rows."""

    __tablename__ = "bob_record"
    __table_args__ = (
        Index("ix_bob_record_vin", "vin"),
        Index("ix_bob_record_naic_file_id", "naic", "file_id"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    file_id: Mapped[int] = mapped_column(Integer)
    line: Mapped[int] = mapped_column(Integer)
    naic: Mapped[str] = mapped_column(String(5))
    policy_type: Mapped[str] = mapped_column(String(2))
    policy_number: Mapped[str] = mapped_column(String(30))  # as written by the insurer
    policy_key: Mapped[str] = mapped_column(String(30))  # olv.normalize.policy_key of it
    vin: Mapped[str | None] = mapped_column(String(25))  # olv.normalize.vin; None on NS rows
    effective_date: Mapped[date] = mapped_column(Date)
    expiration_date: Mapped[date | None] = mapped_column(Date)
    commercial: Mapped[bool] = mapped_column(Boolean, default=False)


class BobCurrent(Base):
    """The pointer that makes a file the master of a NAIC (and its record count, for stats)."""

    __tablename__ = "bob_current"

    naic: Mapped[str] = mapped_column(String(5), primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("bob_file.id"))
    records: Mapped[int] = mapped_column(Integer)
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BobIssue(Base):
    """One problem found in a file (the error report holds all of them; see settings)."""

    __tablename__ = "bob_issue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("bob_file.id", ondelete="CASCADE"), index=True)
    line: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(7))
    # The record's NAIC when it was readable: liaisons see only their NAIC's lines.
    naic: Mapped[str | None] = mapped_column(String(5))


class InsurerContact(Base):
    """Who at an insurer receives the error reports for a NAIC."""

    __tablename__ = "bob_contact"
    __table_args__ = (UniqueConstraint("naic", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    naic: Mapped[str] = mapped_column(String(5), index=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200))
