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

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, bindparam, case, func, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from bob_loader.models import BobFile
from olv.db import as_utc
from portal.answer_time import RULE_MS, TEXAS_MS
from portal.maintenance import ANY_INSURER, Window, intervals
from portal.models import Insurer, InsurerCall

USABLE = "ok"
NOT_COUNTED = "cancelled"
TIMEOUT = "timeout"
PERCENTILES = (50, 95, 99)


@dataclass
class DayStats:
    day: date
    calls: int = 0
    ok: int = 0
    over_5s: int = 0
    over_1_75s: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None

    @property
    def unavailable(self) -> int:
        return self.calls - self.ok

    @property
    def availability(self) -> float | None:
        return round(100.0 * self.ok / self.calls, 2) if self.calls else None

    def as_dict(self) -> dict[str, object]:
        return {
            "day": self.day.isoformat(),
            "calls": self.calls,
            "availability": self.availability,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
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


def _utc_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, zone).astimezone(UTC)


def _utc_bounds(first: date, last: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    return _utc_start(first, zone), _utc_start(last + timedelta(days=1), zone)


def nearest_rank(percent: int, count: ColumnElement[int] | int) -> Any:
    """The 1-based rank of the nearest-rank ``percent``-th percentile of ``count`` values,
    ceil(percent × count / 100), in integers (so SQL and Python agree to the last digit)."""
    return (count * percent + 99) // 100


def _usable(outcome: Any) -> ColumnElement[bool]:
    """The one rule of availability: a call counts as available when its outcome is usable;
    every other counted outcome is the insurer's unavailability."""
    usable: ColumnElement[bool] = outcome == USABLE
    return usable


def per_day(
    db: Session,
    first: date,
    last: date,
    zone: ZoneInfo,
    naics: list[str] | None,
    windows: Sequence[Window] = (),
    between: Callable[[], None] = lambda: None,
) -> list[InsurerStats]:
    """One entry per registered insurer (of ``naics``, when given), every day in the range.

    The database does the counting, a day at a time (a local day is a UTC interval; the
    index on the calls' time covers every column read): per insurer, the totals by GROUP BY
    and the percentiles by ranking the latencies in a window. What comes back is a few rows
    per insurer per day, whatever the number of calls. ``between`` is called before each
    day's statements (a time limit's check).
    """
    insurers = select(Insurer.naic, Insurer.name).order_by(Insurer.naic)
    if naics is not None:
        insurers = insurers.where(Insurer.naic.in_(naics))
    names = dict(db.execute(insurers).tuples().all())
    days = day_range(first, last)
    table: dict[str, list[DayStats]] = {naic: [DayStats(d) for d in days] for naic in names}
    if not names:
        return []
    start: BindParameter[datetime] = bindparam("start")
    end: BindParameter[datetime] = bindparam("end")
    counted = select(
        InsurerCall.naic.label("naic"),
        InsurerCall.outcome.label("outcome"),
        InsurerCall.latency_ms.label("latency"),
    ).where(
        InsurerCall.at >= start,
        InsurerCall.at < end,
        InsurerCall.outcome != NOT_COUNTED,
        InsurerCall.naic.in_(list(names)),
    )
    planned = [
        and_(
            InsurerCall.at >= window_start,
            InsurerCall.at < window_end,
            true() if naic == ANY_INSURER else InsurerCall.naic == naic,
        )
        for naic, window_start, window_end in intervals(windows, first, last, zone)
    ]
    if planned:
        # Unavailability inside an announced maintenance window is not held against the insurer.
        counted = counted.where(~and_(~_usable(InsurerCall.outcome), or_(*planned)))
    calls = counted.subquery()
    totals = select(
        calls.c.naic,
        func.count(),
        func.sum(case((_usable(calls.c.outcome), 1), else_=0)),
        func.sum(case((or_(calls.c.latency > RULE_MS, calls.c.outcome == TIMEOUT), 1), else_=0)),
        func.sum(case((calls.c.latency > TEXAS_MS, 1), else_=0)),
    ).group_by(calls.c.naic)
    ranked = select(
        calls.c.naic,
        calls.c.latency,
        func.row_number().over(partition_by=calls.c.naic, order_by=calls.c.latency).label("rank"),
    ).subquery()
    for index, day in enumerate(days):
        bounds = {"start": _utc_start(day, zone), "end": _utc_start(day + timedelta(days=1), zone)}
        between()
        ranks: dict[str, dict[int, list[int]]] = {}  # NAIC → rank → the percentiles at it
        for naic, count, ok, over_5s, over_1_75s in db.execute(totals, bounds):
            stats = table[naic][index]
            stats.calls, stats.ok = count, int(ok)
            stats.over_5s, stats.over_1_75s = int(over_5s), int(over_1_75s)
            at = ranks[naic] = {}
            for percent in PERCENTILES:
                at.setdefault(nearest_rank(percent, count), []).append(percent)
        if not ranks:
            continue
        # Only the ranked rows that are a percentile come back: a few per insurer.
        wanted = or_(
            *(and_(ranked.c.naic == naic, ranked.c.rank.in_(list(r))) for naic, r in ranks.items())
        )
        picked = select(ranked.c.naic, ranked.c.rank, ranked.c.latency).where(wanted)
        for naic, rank, latency in db.execute(picked, bounds):
            for percent in ranks[naic][rank]:
                setattr(table[naic][index], f"p{percent}_ms", round(latency, 1))
    return [InsurerStats(naic, names[naic], table[naic]) for naic in names]


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
        moment = as_utc(processed)
        if moment is None:  # the query asked for processed files only
            continue
        for naic in naic_list.split(","):
            accepted[naic].append(moment)
    missing: list[dict[str, object]] = []
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
