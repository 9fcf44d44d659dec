"""Planned maintenance windows of insurers' services (``OLV_PORTAL_MAINTENANCE_WINDOWS``).

Idaho permits "down time for system maintenance" as long as the service answers "System
Unavailable" meanwhile. A call that found an insurer unavailable inside one of its announced
windows is therefore not held against it on the compliance page.

The setting is a ``;``-separated list; each entry is ``NAIC@WHEN`` (``*`` for every insurer):

* weekly, in ``OLV_TIMEZONE``: ``12345@Sun 01:00-03:00`` (end up to ``24:00``; a window over
  midnight is written as two);
* once: ``12345@2026-12-06T01:00/2026-12-06T05:00`` (local times in ``OLV_TIMEZONE``).

Windows include their start and exclude their end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import tzinfo as TzInfo

from olv import normalize

ANY_INSURER = "*"
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKLY = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})$")
_MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Window:
    """One window of one insurer (or of every insurer: ``naic`` is ``*``).

    Weekly windows carry ``weekday`` (0 = Monday) and minutes since midnight; one-off windows
    carry local ``start``/``end`` datetimes without a zone (read in ``OLV_TIMEZONE``).
    """

    naic: str
    weekday: int | None = None
    first_minute: int = 0
    end_minute: int = 0
    start: datetime | None = None
    end: datetime | None = None


def _minutes(text: str, entry: str) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes > 59 or hours * 60 + minutes > _MINUTES_PER_DAY:
        raise ValueError(f"{entry!r}: {text} is not a time of day")
    return hours * 60 + minutes


def _one(entry: str) -> Window:
    naic, at, when = entry.partition("@")
    naic, when = naic.strip(), when.strip()
    if not at or not (naic == ANY_INSURER or normalize.is_naic(naic)):
        raise ValueError(f"{entry!r}: expected NAIC@WHEN, NAIC five digits or *")
    weekly = _WEEKLY.match(when)
    if weekly:
        first, end = _minutes(weekly[2], entry), _minutes(weekly[3], entry)
        if end <= first:
            raise ValueError(f"{entry!r}: the end must be after the start (split over midnight)")
        return Window(naic, DAYS.index(weekly[1]), first, end)
    start_text, slash, end_text = when.partition("/")
    start: datetime | None
    stop: datetime | None
    try:
        start, stop = datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)
    except ValueError:
        start = stop = None
    if not slash or start is None or stop is None or start.tzinfo or stop.tzinfo:
        raise ValueError(
            f"{entry!r}: expected 'Sun 01:00-03:00' or '2026-12-06T01:00/2026-12-06T05:00' "
            "(local times, no offset)"
        )
    if stop <= start:
        raise ValueError(f"{entry!r}: the end must be after the start")
    return Window(naic, start=start, end=stop)


def parse_windows(text: str) -> tuple[Window, ...]:
    """The windows of the setting's value; raises ``ValueError`` naming the bad entry."""
    return tuple(_one(entry) for entry in text.split(";") if entry.strip())


def planned(windows: Sequence[Window], naic: str, at: datetime, zone: TzInfo) -> bool:
    """Whether the moment ``at`` (aware) lies in a planned window of insurer ``naic``: the same
    UTC intervals the compliance report leaves out in SQL."""
    day = at.astimezone(zone).date()
    return any(
        window_naic in (ANY_INSURER, naic) and start <= at < end
        for window_naic, start, end in intervals(windows, day, day, zone)
    )


def intervals(
    windows: Sequence[Window], first: date, last: date, zone: TzInfo
) -> list[tuple[str, datetime, datetime]]:
    """The windows that touch the local days ``first``..``last`` as ``(naic, start, end)`` in
    UTC (``naic`` may be ``*``), so a database can leave their calls out by itself."""
    found: list[tuple[str, datetime, datetime]] = []

    def add(naic: str, start: datetime, end: datetime) -> None:
        found.append(
            (
                naic,
                start.replace(tzinfo=zone).astimezone(UTC),
                end.replace(tzinfo=zone).astimezone(UTC),
            )
        )

    days = [first + timedelta(days=i) for i in range(-1, (last - first).days + 2)]
    for window in windows:
        if window.start is not None and window.end is not None:
            add(window.naic, window.start, window.end)
            continue
        for day in days:
            if day.weekday() == window.weekday:
                midnight = datetime(day.year, day.month, day.day)
                add(
                    window.naic,
                    midnight + timedelta(minutes=window.first_minute),
                    midnight + timedelta(minutes=window.end_minute),
                )
    return found


__all__ = ["ANY_INSURER", "Window", "intervals", "parse_windows", "planned"]
