"""Reports (SPEC §6 "Reports"): per insurer — files and transactions received, H/R/E/U counts,
edit errors by code, timeliness; state-wide — open cases by state, uninsured per month.

Timeliness uses the 34.9 / guide time frames: an NBS within 7 days of its effective date, an
XLC within 30, an MVF answered within 14 days (an answer carries its tracking number).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, or_, select, true
from sqlalchemy.orm import Session

from enforcement.models import Case as CaseRow
from enforcement.models import IiesFile, IiesTransaction, MvfRequest

NBS_DAYS, XLC_DAYS, MVF_DAYS = 7, 30, 14
DISPOSITIONS = ("H", "R", "E", "U")


@dataclass
class Timely:
    on_time: int = 0
    total: int = 0

    @property
    def percent(self) -> float | None:
        return round(100 * self.on_time / self.total, 1) if self.total else None


@dataclass
class InsurerDay:
    day: date
    received: int = 0
    dispositions: Counter[str] = field(default_factory=Counter)
    nbs: Timely = field(default_factory=Timely)
    xlc: Timely = field(default_factory=Timely)


@dataclass
class InsurerReport:
    naic: str
    first: date
    last: date
    files_accepted: int = 0
    files_rejected: int = 0
    transactions: int = 0
    dispositions: Counter[str] = field(default_factory=Counter)
    edit_errors: Counter[str] = field(default_factory=Counter)
    nbs: Timely = field(default_factory=Timely)
    xlc: Timely = field(default_factory=Timely)
    mvf: Timely = field(default_factory=Timely)
    days: list[InsurerDay] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "naic": self.naic,
            "since": self.first.isoformat(),
            "until": self.last.isoformat(),
            "files_accepted": self.files_accepted,
            "files_rejected": self.files_rejected,
            "transactions": self.transactions,
            "dispositions": {d: self.dispositions.get(d, 0) for d in DISPOSITIONS},
            "edit_errors": dict(sorted(self.edit_errors.items())),
            "timeliness": {
                "nbs_within_7_days": _timely(self.nbs),
                "xlc_within_30_days": _timely(self.xlc),
                "mvf_answered_within_14_days": _timely(self.mvf),
            },
        }


def _timely(t: Timely) -> dict[str, Any]:
    return {"on_time": t.on_time, "total": t.total, "percent": t.percent}


def _bounds(first: date, last: date) -> tuple[datetime, datetime]:
    return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(1), time(), UTC)


def insurer_report(session: Session, naic: str, first: date, last: date) -> InsurerReport:
    """One insurer's filings received from ``first`` to ``last`` (UTC days, inclusive)."""
    start, end = _bounds(first, last)
    report = InsurerReport(naic, first, last)
    days = {
        first + timedelta(n): InsurerDay(first + timedelta(n))
        for n in range((last - first).days + 1)
    }
    for status, count in session.execute(
        select(IiesFile.status, func.count())
        .where(IiesFile.naic == naic, IiesFile.received_at >= start, IiesFile.received_at < end)
        .group_by(IiesFile.status)
    ):
        if status == "accepted":
            report.files_accepted = count
        else:
            report.files_rejected = count
    rows = session.execute(
        select(
            IiesTransaction.type,
            IiesTransaction.effective_date,
            IiesTransaction.received_at,
            IiesTransaction.disposition,
            IiesTransaction.codes,
        ).where(
            IiesTransaction.naic == naic,
            IiesTransaction.received_at >= start,
            IiesTransaction.received_at < end,
        )
    )
    for kind, effective, received_at, disposition, codes in rows:
        received = _utc_day(received_at)
        today = days.get(received)
        report.transactions += 1
        report.dispositions[disposition] += 1
        if disposition == "E":
            report.edit_errors.update(c for c in codes.split(",") if c)
        if today is not None:
            today.received += 1
            today.dispositions[disposition] += 1
        limit = {"NBS": NBS_DAYS, "XLC": XLC_DAYS}.get(kind)
        if limit is None or effective is None:
            continue
        on_time = (received - effective).days <= limit
        for timely in (getattr(report, kind.lower()), getattr(today, kind.lower(), None)):
            if timely is not None:
                timely.total += 1
                timely.on_time += on_time
    for sent_on, answered_on in session.execute(
        select(MvfRequest.sent_on, MvfRequest.answered_on).where(
            MvfRequest.naic == naic,
            MvfRequest.live_status.is_(None),
            MvfRequest.sent_on >= first,
            MvfRequest.sent_on <= last,
        )
    ):
        answered_in_time = answered_on is not None and (answered_on - sent_on).days <= MVF_DAYS
        if answered_in_time or answered_on is not None or (last - sent_on).days > MVF_DAYS:
            report.mvf.total += 1
            report.mvf.on_time += answered_in_time
    report.days = list(days.values())
    return report


def _utc_day(value: datetime) -> date:
    if value.tzinfo is None:  # SQLite gives naive datetimes; they are UTC
        return value.date()
    return value.astimezone(UTC).date()


def filing_naics(session: Session) -> list[str]:
    """Every NAIC that has sent a file."""
    return sorted(n for n in session.scalars(select(IiesFile.naic).distinct()) if n is not None)


# --- state-wide -------------------------------------------------------------------------------


def open_cases_by_state(
    session: Session, first: date, last: date
) -> dict[str, list[tuple[date, int]]]:
    """For each plate state, the cases open at the end of each day from ``first`` to ``last``."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * ((last - first).days + 1))
    for state, opened, closed in session.execute(
        select(CaseRow.state, CaseRow.opened_on, CaseRow.closed_on).where(
            CaseRow.opened_on <= last, or_(CaseRow.closed_on.is_(None), CaseRow.closed_on > first)
        )
    ):
        series = counts[state]
        begin = max((opened - first).days, 0)
        end = len(series) if closed is None else min((closed - first).days, len(series))
        for index in range(begin, end):
            series[index] += 1
    return {
        state: [(first + timedelta(i), n) for i, n in enumerate(values)]
        for state, values in sorted(counts.items())
    }


def _month_starts(first: date, last: date) -> list[date]:
    months = []
    current = first.replace(day=1)
    while current <= last:
        months.append(current)
        current = (current + timedelta(days=32)).replace(day=1)
    return months


def uninsured_per_month(session: Session, first: date, last: date) -> list[tuple[date, int]]:
    """Registrations with a lapse or unverified proof open at some time in each month."""
    months = _month_starts(first, last)
    seen: list[set[int]] = [set() for _ in months]
    ends = [(m + timedelta(days=32)).replace(day=1) for m in months]
    for registration_id, opened, closed in session.execute(
        select(CaseRow.registration_id, CaseRow.opened_on, CaseRow.closed_on).where(
            CaseRow.opened_on < ends[-1] if ends else true(),
            or_(CaseRow.closed_on.is_(None), CaseRow.closed_on > months[0] if months else true()),
        )
    ):
        for index, (start, end) in enumerate(zip(months, ends, strict=True)):
            if opened < end and (closed is None or closed > start):
                seen[index].add(registration_id)
    return [(m, len(s)) for m, s in zip(months, seen, strict=True)]
