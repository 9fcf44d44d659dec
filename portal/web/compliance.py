"""Compliance: per insurer per day, as SVG charts and numbers, and the insurers breaking rules.

Administrators see every insurer; an insurer liaison sees their own NAIC's service health.
The figures are counted by the database; at most ``OLV_PORTAL_COMPLIANCE_CONCURRENCY`` such
requests run at once (503 beyond that) and each has ``OLV_PORTAL_COMPLIANCE_SECONDS`` (503 when
the database takes longer), so reports never crowd out real-time queries.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy.exc import OperationalError

from olv.db import time_limit
from portal import answer_time, permissions
from portal.answer_time import RULE_SECONDS, TEXAS_SECONDS
from portal.charts import Chart, Series, Threshold, bar_chart, line_chart
from portal.deps import ComplianceViewer, DbSession
from portal.errors import ApiError, invalid
from portal.inflight import InFlight, held
from portal.web import compliance_data as data
from portal.web import params
from portal.web.identity import now
from portal.web.render import page, twin_get

router = APIRouter(include_in_schema=False)
DEFAULT_DAYS = 30
MAX_DAYS = 92


def install(app: FastAPI) -> None:
    limit = app.state.portal_settings.compliance_concurrency
    app.state.compliance_gate = InFlight("compliance reports", limit)


def _gate(request: Request) -> InFlight:
    gate: InFlight = request.app.state.compliance_gate
    return gate


def _seconds(values: list[Any]) -> list[float | None]:
    return [None if v is None else v / 1000 for v in values]


def charts_for(stats: data.InsurerStats) -> list[Markup]:
    days = [d.day for d in stats.days]
    rows = [d.as_dict() for d in stats.days]
    latency = Chart(
        "Latency (s): p50, p95, p99",
        days,
        [
            Series("p50", _seconds([r["p50_ms"] for r in rows])),
            Series("p95", _seconds([r["p95_ms"] for r in rows])),
            Series("p99", _seconds([r["p99_ms"] for r in rows])),
        ],
        unit=" s",
        thresholds=[Threshold(s, answer_time.label(s)) for s in (TEXAS_SECONDS, RULE_SECONDS)],
    )
    calls = Chart(
        "Calls per day",
        days,
        [
            Series("answered", [d.ok for d in stats.days]),
            Series("unavailable", [d.unavailable for d in stats.days]),
        ],
        counts=True,
    )
    availability = Chart(
        "Availability (%)",
        days,
        [Series("available", [d.availability for d in stats.days])],
        unit="%",
        y_max=100,
    )
    slow = Chart(
        "Slow answers per day",
        days,
        [
            Series(
                f"{TEXAS_SECONDS:g}-{answer_time.label(RULE_SECONDS)}",
                [d.over_1_75s - min(d.over_5s, d.over_1_75s) for d in stats.days],
            ),
            Series(f"over {answer_time.label(RULE_SECONDS)}", [d.over_5s for d in stats.days]),
        ],
        counts=True,
    )
    return [line_chart(latency), bar_chart(calls), line_chart(availability), bar_chart(slow)]


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


@twin_get(router, "/compliance")
def compliance(
    request: Request,
    me: ComplianceViewer,
    _place: Annotated[None, held(_gate)],
    db: DbSession,
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    zone = request.app.state.settings.zone
    today = now(request).astimezone(zone).date()
    last = params.day("until", until) or today
    first = params.day("since", since) or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise invalid("since", "must not be after until")
    if (last - first).days >= MAX_DAYS:
        raise invalid("since", f"at most {MAX_DAYS} days at a time")
    visible = permissions.visible_naics(me)
    naics = None if visible is None else sorted(visible)
    portal_settings = request.app.state.portal_settings
    due_day = portal_settings.bob_deadline_day
    seconds = portal_settings.compliance_seconds
    try:
        with db.begin(), time_limit(db.connection(), seconds) as tighten:
            windows = portal_settings.maintenance
            stats = data.per_day(db, first, last, zone, naics, windows, tighten)
            tighten()
            due, missing = data.missing_uploads(db, today, due_day, zone, naics)
    except (OperationalError, TimeoutError):
        raise ApiError(
            503, f"the figures took longer than {seconds:g} s to count; ask for fewer days"
        ) from None
    insurers = [
        {"naic": s.naic, "name": s.name, "days": [d.as_dict() for d in s.days]} for s in stats
    ]
    context = {
        "since": first.isoformat(),
        "until": last.isoformat(),
        "generated_at": datetime.now(zone).isoformat(timespec="seconds"),
        "insurers": insurers,
        "slow": [
            {"naic": s.naic, "name": s.name, "over_5s": s.over_5s} for s in stats if s.over_5s
        ],
        "bob_due": due.isoformat(),
        "missing_bob": missing,
    }
    view = {
        "charts": {s.naic: charts_for(s) for s in stats},
        "due_day_ordinal": _ordinal(due_day),
        "rule": answer_time.label(RULE_SECONDS),
        "texas": answer_time.label(TEXAS_SECONDS),
    }
    return page(request, "compliance.html", "Compliance", context, view)
