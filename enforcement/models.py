"""Enforcement tables (SPEC §6; created by migration ``0009``).

The portal's ``registrations`` (plate + state → VIN) stays as it is, so the plate look-up of
verifications is untouched; everything §6 adds about a registration sits beside it:

* ``registrants``         one row per registration: the registrant and the registration's own
                          details (class, term, status). Personal data: dmv/admin and letters only
* ``iies_files``          every file or API call received, with its acknowledgement
* ``iies_transactions``   every insurer transaction (the 34.9 elements) and its disposition
* ``coverage_periods``    the coverage timeline per registration and insurer
* ``cases``               one lapse (or unverified proof) of one registration, opened to closed
* ``activities``          what happened, when, why and who caused it; rows are only ever added
* ``letters``             each letter or order, its 10-digit Document ID and the addressee as
                          printed (a snapshot: later registrant changes do not alter a sent letter)
* ``mvf_requests``        mandatory verifications sent to insurers (tracking number, due date)
* ``bob_absences``        Idaho-style monitoring: consecutive monthly loads without the VIN
* ``iies_run_steps``      the journal that makes ``olv iies run`` idempotent for a date

Dates of events (effective dates, activity dates) are calendar dates: coverage starts and ends at
12:01 a.m. on its date (34.9(f)(5)), so no time of day belongs to them.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from olv.db import Base, RowId

_REGISTRATION = "registrations.id"


class Registrant(Base):
    """Who holds a registration, and the registration's own details (all optional).

    ``resolve_key`` is the exception-matching key computed at import (5/3/1 letters of the name
    parts and the DOB for an individual or the zip for an organization, see
    :func:`enforcement.matching.resolve_key`), indexed so R matching is one index look-up.
    """

    __tablename__ = "registrants"
    __table_args__ = (
        CheckConstraint("entity_type IN (1, 2)", name="entity_type"),
        CheckConstraint("status IN ('active', 'expired', 'surrendered')", name="status"),
        Index("ix_registrants_resolve_key", "resolve_key"),
    )

    registration_id: Mapped[int] = mapped_column(
        ForeignKey(_REGISTRATION, ondelete="CASCADE"), primary_key=True
    )
    reg_class: Mapped[str | None] = mapped_column(String(10))
    entity_type: Mapped[int | None] = mapped_column(SmallInteger)  # 1 individual, 2 organization
    last_name: Mapped[str | None] = mapped_column(String(100))  # or the organization's name
    first_name: Mapped[str | None] = mapped_column(String(50))
    middle_name: Mapped[str | None] = mapped_column(String(50))
    dob: Mapped[date | None] = mapped_column(Date)
    dl_number: Mapped[str | None] = mapped_column(String(20))
    fein: Mapped[str | None] = mapped_column(String(9))
    zip: Mapped[str | None] = mapped_column(String(10))
    address1: Mapped[str | None] = mapped_column(String(100))
    address2: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(60))
    reg_effective: Mapped[date | None] = mapped_column(Date)
    reg_expires: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str | None] = mapped_column(String(11))
    resolve_key: Mapped[str | None] = mapped_column(String(40))


class IiesFile(Base):
    """One file or API call from one insurer, and its acknowledgement (accepted or rejected
    whole). A rejected file keeps no transactions: only this row says it came and why not."""

    __tablename__ = "iies_files"
    __table_args__ = (
        CheckConstraint("status IN ('accepted', 'rejected')", name="status"),
        CheckConstraint("channel IN ('sftp', 'cli', 'api')", name="channel"),
        Index("ix_iies_files_naic_received_at", "naic", "received_at"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)  # the acknowledgement id
    naic: Mapped[str | None] = mapped_column(String(5))  # None: rejected before one was known
    channel: Mapped[str] = mapped_column(String(4))
    name: Mapped[str] = mapped_column(String(255))  # file name, or "api"
    sha256: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(8))
    error_code: Mapped[str | None] = mapped_column(String(3))  # enforcement.codes.FILE_ERRORS
    error: Mapped[str | None] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    matched: Mapped[int] = mapped_column(Integer, default=0)  # H
    resolved: Mapped[int] = mapped_column(Integer, default=0)  # R
    edit_errors: Mapped[int] = mapped_column(Integer, default=0)  # E
    unresolved: Mapped[int] = mapped_column(Integer, default=0)  # U


class IiesTransaction(Base):
    """One insurer event (34.9(f) elements, CSV of SPEC §6) and what became of it.

    Elements are kept as sent (an edit-error row keeps its text, cut to the column) except
    dates, which are stored only when they are real dates. ``disposition``: H matched
    (``match_rule`` H1-H4), R resolved by exception matching, E edit or sequence error
    (``codes``), U unresolved; an NBS left U is re-matched daily until ``rematch_until``.
    ``posted_on`` is set by ``olv iies run`` once the event is in the coverage timeline.
    ``returned_at`` is set when the disposition went out in an outbox file.
    """

    __tablename__ = "iies_transactions"
    __table_args__ = (
        UniqueConstraint("naic", "txn_id"),
        CheckConstraint("disposition IN ('H', 'R', 'E', 'U')", name="disposition"),
        Index("ix_iies_transactions_registration_id", "registration_id"),
        Index("ix_iies_transactions_naic_disposed_at", "naic", "disposed_at"),
        Index("ix_iies_transactions_rematch_until", "rematch_until"),
        Index("ix_iies_transactions_posted_on", "posted_on"),
        Index("ix_iies_transactions_tracking_number", "tracking_number"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)  # arrival order
    file_id: Mapped[int] = mapped_column(ForeignKey("iies_files.id"), index=True)
    txn_id: Mapped[str] = mapped_column(String(40))  # the insurer's own id
    type: Mapped[str] = mapped_column(String(3))  # as sent: a wrong type is edit E02
    naic: Mapped[str] = mapped_column(String(5))
    effective_date: Mapped[date | None] = mapped_column(Date)
    policy_number: Mapped[str | None] = mapped_column(String(50))
    policy_type: Mapped[str | None] = mapped_column(String(1))
    entity_type: Mapped[str | None] = mapped_column(String(1))
    last_name: Mapped[str | None] = mapped_column(String(100))
    first_name: Mapped[str | None] = mapped_column(String(50))
    middle_name: Mapped[str | None] = mapped_column(String(50))
    dob: Mapped[date | None] = mapped_column(Date)
    dl_number: Mapped[str | None] = mapped_column(String(20))
    fein: Mapped[str | None] = mapped_column(String(9))
    zip: Mapped[str | None] = mapped_column(String(10))
    vin: Mapped[str | None] = mapped_column(String(25))
    plate: Mapped[str | None] = mapped_column(String(12))
    vehicle_year: Mapped[str | None] = mapped_column(String(4))
    make: Mapped[str | None] = mapped_column(String(20))
    tracking_number: Mapped[str | None] = mapped_column(String(20))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disposition: Mapped[str] = mapped_column(String(1))
    match_rule: Mapped[str | None] = mapped_column(String(2))  # H1..H4, R
    codes: Mapped[str] = mapped_column(String(100), default="")  # edit codes, comma-separated
    registration_id: Mapped[int | None] = mapped_column(
        ForeignKey(_REGISTRATION, ondelete="SET NULL")
    )
    disposed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # last change
    rematch_until: Mapped[date | None] = mapped_column(Date)  # None: the disposition is final
    posted_on: Mapped[date | None] = mapped_column(Date)
    returned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CoveragePeriod(Base):
    """Liability coverage of one registration by one insurer from ``starts`` up to (not
    including) ``ends``; ``ends`` None while in force. Built by ``olv iies run`` from posted
    transactions, accepted paper proof (``source`` proof) or a live confirmation (live)."""

    __tablename__ = "coverage_periods"
    __table_args__ = (
        CheckConstraint("source IN ('edi', 'proof', 'live', 'bob')", name="source"),
        Index("ix_coverage_periods_registration_id_starts", "registration_id", "starts"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey(_REGISTRATION, ondelete="CASCADE"))
    naic: Mapped[str] = mapped_column(String(5))
    policy_number: Mapped[str | None] = mapped_column(String(50))
    starts: Mapped[date] = mapped_column(Date)
    ends: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(5))
    opened_by: Mapped[int | None] = mapped_column(ForeignKey("iies_transactions.id"))
    closed_by: Mapped[int | None] = mapped_column(ForeignKey("iies_transactions.id"))
    rescinded: Mapped[bool] = mapped_column(Boolean, default=False)  # by a REP


class Case(Base):
    """One enforcement case of one registration (guide: "Case Summary").

    ``case_state`` is one of :data:`enforcement.codes.CASE_STATES`; ``next_due`` the date of the
    next step if nothing happens (letter, suspension). Closing sets ``closed_on``, the closing
    activity and, for a lapse, its days and whether a civil penalty is allowed.
    """

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_registration_id", "registration_id"),
        Index("ix_cases_vin", "vin"),
        Index("ix_cases_open_next_due", "closed_on", "next_due"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey(_REGISTRATION, ondelete="CASCADE"))
    vin: Mapped[str] = mapped_column(String(25))
    plate: Mapped[str] = mapped_column(String(12))
    state: Mapped[str] = mapped_column(String(2))  # the plate's state
    case_state: Mapped[str] = mapped_column(String(3))
    opened_on: Mapped[date] = mapped_column(Date)
    open_activity: Mapped[str] = mapped_column(String(3))  # XLC, NIS, MVF, REG, BOB...
    naic: Mapped[str | None] = mapped_column(String(5))  # the insurer whose event opened it
    lapse_starts: Mapped[date | None] = mapped_column(Date)
    next_due: Mapped[date | None] = mapped_column(Date)
    closed_on: Mapped[date | None] = mapped_column(Date)
    close_activity: Mapped[str | None] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(String(3))  # A01-A20, R01-R36
    lapse_days: Mapped[int | None] = mapped_column(Integer)
    civil_penalty_eligible: Mapped[bool | None] = mapped_column(Boolean)


class Activity(Base):
    """One thing that happened to a registration (guide: activity codes). Append-only: the
    code never updates or deletes these rows; a correction is a new activity."""

    __tablename__ = "activities"
    __table_args__ = (
        Index("ix_activities_registration_id_on", "registration_id", "activity_date"),
        Index("ix_activities_case_id", "case_id"),
        Index("ix_activities_doc_id", "doc_id"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey(_REGISTRATION, ondelete="CASCADE"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    activity_date: Mapped[date] = mapped_column(Date)
    code: Mapped[str] = mapped_column(String(3))  # enforcement.codes.ACTIVITIES
    reason: Mapped[str | None] = mapped_column(String(3))  # enforcement.codes.REASONS
    doc_id: Mapped[str | None] = mapped_column(String(10))
    case_state: Mapped[str | None] = mapped_column(String(3))  # the state it moved the case to
    caused_by: Mapped[str] = mapped_column(String(60))  # "txn:<id>", "run:<date>", "user:<name>"
    transaction_id: Mapped[int | None] = mapped_column(ForeignKey("iies_transactions.id"))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Letter(Base):
    """A letter or order to a registrant; ``doc_id`` is its unique 10-digit Document ID. The
    addressee and vehicle are copied as printed, so a reprint says what was mailed."""

    __tablename__ = "letters"
    __table_args__ = (
        CheckConstraint("length(doc_id) = 10", name="doc_id_length"),
        Index("ix_letters_letter_date", "letter_date"),
        Index("ix_letters_case_id", "case_id"),
    )

    doc_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    type: Mapped[str] = mapped_column(String(3))  # enforcement.codes.LETTER_TYPES
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    registration_id: Mapped[int] = mapped_column(ForeignKey(_REGISTRATION, ondelete="CASCADE"))
    letter_date: Mapped[date] = mapped_column(Date)
    respond_by: Mapped[date | None] = mapped_column(Date)
    addressee: Mapped[str] = mapped_column(String(200))
    address1: Mapped[str | None] = mapped_column(String(100))
    address2: Mapped[str | None] = mapped_column(String(100))
    city: Mapped[str | None] = mapped_column(String(60))
    zip: Mapped[str | None] = mapped_column(String(10))
    vin: Mapped[str] = mapped_column(String(25))
    plate: Mapped[str] = mapped_column(String(12))
    state: Mapped[str] = mapped_column(String(2))
    undeliverable_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MvfRequest(Base):
    """A mandatory verification (MVF) sent to an insurer about posted paper proof; answered by
    an NBS (confirmed) or NIS carrying its tracking number, or by the insurer's live OLV
    service (``live_status``)."""

    __tablename__ = "mvf_requests"
    __table_args__ = (
        UniqueConstraint("tracking_number"),
        Index("ix_mvf_requests_naic_sent_on", "naic", "sent_on"),
        Index("ix_mvf_requests_registration_id", "registration_id"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    tracking_number: Mapped[str] = mapped_column(String(20))
    registration_id: Mapped[int] = mapped_column(ForeignKey(_REGISTRATION, ondelete="CASCADE"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    naic: Mapped[str] = mapped_column(String(5))
    policy_number: Mapped[str | None] = mapped_column(String(50))
    effective_date: Mapped[date] = mapped_column(Date)  # the proof's date the insurer confirms
    sent_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    live_status: Mapped[str | None] = mapped_column(String(11))  # Confirmed | Unconfirmed | None
    answer: Mapped[str | None] = mapped_column(String(3))  # NBS | NIS
    answered_by: Mapped[int | None] = mapped_column(ForeignKey("iies_transactions.id"))
    answered_on: Mapped[date | None] = mapped_column(Date)
    returned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # in outbox


class BobAbsence(Base):
    """For states on monthly books of business: how many consecutive monthly loads have not
    carried this registration's VIN, and what a live broadcast said about it."""

    __tablename__ = "bob_absences"

    registration_id: Mapped[int] = mapped_column(
        ForeignKey(_REGISTRATION, ondelete="CASCADE"), primary_key=True
    )
    missing_loads: Mapped[int] = mapped_column(Integer, default=0)
    first_missing_on: Mapped[date | None] = mapped_column(Date)
    last_checked_month: Mapped[str | None] = mapped_column(String(7))  # YYYY-MM
    broadcast_on: Mapped[date | None] = mapped_column(Date)
    broadcast_status: Mapped[str | None] = mapped_column(String(11))  # Confirmed | Unconfirmed


class IiesRunStep(Base):
    """A step of ``olv iies run`` done for a date; a rerun skips what is recorded here."""

    __tablename__ = "iies_run_steps"

    run_date: Mapped[date] = mapped_column(Date, primary_key=True)
    step: Mapped[str] = mapped_column(String(40), primary_key=True)
    done_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    summary: Mapped[str] = mapped_column(Text, default="")  # JSON counts of the step
