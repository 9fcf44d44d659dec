"""The numbers behind the compliance page, from ``insurer_calls`` and the BoB file records.

Per insurer per day (days in ``OLV_TIMEZONE``):

* ``calls``        calls that ran to an end — calls cancelled because another insurer confirmed
                   first are left out (they say nothing about the insurer);
* ``availability`` percentage of those with a usable answer (outcome ``ok``);
* ``p50/p95/p99``  latency in ms over those calls (nearest-rank percentiles);
* ``over_5s``      answers after 5 s, and calls not answered in time (timeouts): the 5-second
                   rule; ``over_1_75s`` answers after 1.75 s (the Texas rule);
* ``unavailable``  calls without a usable answer (timeout, refused, TLS, HTTP error, fault,
                   schema-invalid answer, SYSU/UREQ).

A call without a usable answer inside one of the insurer's planned maintenance windows
(:mod:`portal.maintenance`) is left out like a cancelled one: it is not held against it.

A NAIC *misses the monthly upload* when no file carrying it was accepted between the first of
the month and the end of its due day (``OLV_PORTAL_BOB_DEADLINE_DAY``), for the latest due day
that has passed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bob_loader.models import BobFile
from olv.db import as_utc
from portal.maintenance import Window, planned
from portal.models import Insurer, InsurerCall

FIVE_SECONDS_MS = 5000.0
TEXAS_MS = 1750.0
USABLE = "ok"
NOT_COUNTED = "cancelled"
TIMEOUT = "timeout"


@dataclass
class DayStats:
    day: date
    calls: int = 0
    ok: int = 0
    over_5s: int = 0
    over_1_75s: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def unavailable(self) -> int:
        return self.calls - self.ok

    @property
    def availability(self) -> float | None:
        return round(100.0 * self.ok / self.calls, 2) if self.calls else None

    def percentile(self, share: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return round(ordered[max(math.ceil(share * len(ordered)) - 1, 0)], 1)

    def as_dict(self) -> dict[str, object]:
        return {
            "day": self.day.isoformat(),
            "calls": self.calls,
            "availability": self.availability,
            "p50_ms": self.percentile(0.50),
            "p95_ms": self.percentile(0.95),
            "p99_ms": self.percentile(0.99),
            "over_5s": self.over_5s,
            "over_1_75s": self.over_1_75s,
            "unavailable": self.unavailable,
        }


@dataclass
class InsurerStats:
    naic: str
    name: str
    days: list[DayStats]

    @property
    def over_5s(self) -> int:
        return sum(d.over_5s for d in self.days)


def day_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _utc_bounds(first: date, last: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(first, time.min, zone).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, zone).astimezone(UTC)
    return start, end


def per_day(
    db: Session,
    first: date,
    last: date,
    zone: ZoneInfo,
    naics: list[str] | None,
    windows: Sequence[Window] = (),
) -> list[InsurerStats]:
    """One entry per registered insurer (of ``naics``, when given), every day in the range."""
    insurers = select(Insurer.naic, Insurer.name).order_by(Insurer.naic)
    if naics is not None:
        insurers = insurers.where(Insurer.naic.in_(naics))
    names = dict(db.execute(insurers).tuples().all())
    days = day_range(first, last)
    table: dict[str, dict[date, DayStats]] = {
        naic: {d: DayStats(d) for d in days} for naic in names
    }
    start, end = _utc_bounds(first, last, zone)
    calls = select(InsurerCall.naic, InsurerCall.at, InsurerCall.outcome, InsurerCall.latency_ms)
    calls = calls.where(InsurerCall.at >= start, InsurerCall.at < end)
    if naics is not None:
        calls = calls.where(InsurerCall.naic.in_(naics))
    for naic, at, outcome, latency in db.execute(calls).yield_per(5000):
        if outcome == NOT_COUNTED or naic not in table:
            continue
        moment = as_utc(at)
        stats = table[naic].get(moment.astimezone(zone).date())
        if stats is None or (outcome != USABLE and planned(windows, naic, moment, zone)):
            continue
        stats.calls += 1
        stats.ok += outcome == USABLE
        stats.latencies.append(latency)
        stats.over_5s += latency > FIVE_SECONDS_MS or outcome == TIMEOUT
        stats.over_1_75s += latency > TEXAS_MS
    return [InsurerStats(naic, names[naic], list(table[naic].values())) for naic in names]


def latest_due_day(today: date, due_day: int) -> date:
    """The most recent due date that has fully passed (the due day itself still counts)."""
    if today.day > due_day:
        return today.replace(day=due_day)
    previous = today.replace(day=1) - timedelta(days=1)
    return previous.replace(day=due_day)


def missing_uploads(
    db: Session, today: date, due_day: int, zone: ZoneInfo, naics: list[str] | None
) -> tuple[date, list[dict[str, object]]]:
    """The due date checked, and the enabled insurers with no accepted file for it in time."""
    due = latest_due_day(today, due_day)
    start, end = _utc_bounds(due.replace(day=1), due, zone)
    insurers = select(Insurer.naic, Insurer.name).where(Insurer.enabled.is_(True))
    if naics is not None:
        insurers = insurers.where(Insurer.naic.in_(naics))
    accepted: defaultdict[str, list[datetime]] = defaultdict(list)
    rows = db.execute(
        select(BobFile.naics, BobFile.processed_at).where(
            BobFile.status == "accepted", BobFile.processed_at >= start
        )
    )
    for naic_list, processed in rows:
        for naic in naic_list.split(","):
            accepted[naic].append(as_utc(processed))
    missing = []
    for naic, name in db.execute(insurers.order_by(Insurer.naic)):
        in_time = [t for t in accepted[naic] if t < end]
        if in_time:
            continue
        late = min(accepted[naic], default=None)
        missing.append(
            {
                "naic": naic,
                "name": name,
                "due": due.isoformat(),
                "late_upload": late.astimezone(zone).date().isoformat() if late else None,
            }
        )
    return due, missing
