"""Enforcement reports as pages with server-side SVG charts and CSV (SPEC §6 "Reports").

``/iies/reports``: one insurer's filings (an insurer liaison sees only their own NAIC).
``/iies/statewide``: open cases by plate state and uninsured registrations per month.
"""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from enforcement import reports
from enforcement.permissions import IIES_REPORTS, IIES_STATEWIDE
from olv import normalize
from portal import csv_cells, permissions
from portal.charts import Chart, Series, bar_chart, line_chart
from portal.deps import DbSession, Principal, permitted
from portal.errors import ApiError, invalid
from portal.web import params
from portal.web.identity import now
from portal.web.render import page, twin_get

router = APIRouter(include_in_schema=False)
ReportViewer = Annotated[Principal, permitted(IIES_REPORTS)]
StateViewer = Annotated[Principal, permitted(IIES_STATEWIDE)]
DEFAULT_DAYS = 30
MAX_DAYS = 366


def _window(request: Request, since: str | None, until: str | None) -> tuple[date, date]:
    today = now(request).astimezone(request.app.state.settings.zone).date()
    last = params.day("until", until) or today
    first = params.day("since", since) or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise invalid("since", "must not be after until")
    if (last - first).days >= MAX_DAYS:
        raise invalid("since", f"at most {MAX_DAYS} days at a time")
    return first, last


def _naic_for(me: Principal, naic: str | None, db: DbSession) -> tuple[str | None, list[str]]:
    """The NAIC to report on and the ones the viewer may choose from."""
    visible = permissions.visible_naics(me)
    if me.role == permissions.Role.INSURER:
        own = me.naic or ""
        if naic not in (None, "", own):
            raise ApiError(403, "an insurer sees its own report only")
        return own, [own]
    if naic not in (None, "") and not normalize.is_naic(naic or ""):
        raise invalid("naic", "five digits")
    choices = reports.filing_naics(db) if visible is None or me.role == "dmv" else sorted(visible)
    return (naic or (choices[0] if choices else None)), choices


def report_charts(report: reports.InsurerReport) -> list[Markup]:
    days = [d.day for d in report.days]
    received = Chart(
        "Transactions received per day, by disposition",
        days,
        [
            Series(d, [day.dispositions.get(d, 0) for day in report.days])
            for d in reports.DISPOSITIONS
        ],
        counts=True,
    )
    timely = Chart(
        "Filed on time (%): NBS within 7 days, XLC within 30",
        days,
        [
            Series("NBS", [d.nbs.percent for d in report.days]),
            Series("XLC", [d.xlc.percent for d in report.days]),
        ],
        unit="%",
        y_max=100,
    )
    return [bar_chart(received), line_chart(timely)]


@twin_get(router, "/iies/reports")
def insurer_reports(
    request: Request,
    db: DbSession,
    me: ReportViewer,
    naic: Annotated[str | None, Query(max_length=5)] = None,
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    first, last = _window(request, since, until)
    with db.begin():
        chosen, choices = _naic_for(me, naic, db)
    context: dict[str, Any] = {
        "since": first.isoformat(),
        "until": last.isoformat(),
        "naic": chosen,
        "naics": choices,
        "report": None,
    }
    view: dict[str, Any] = {"charts": []}
    if chosen:
        with db.begin():
            report = reports.insurer_report(db, chosen, first, last)
        context["report"] = report.as_dict()
        view["charts"] = report_charts(report)
    return page(request, "iies_reports.html", "Filing reports", context, view)


@router.get("/iies/reports.csv")
def insurer_reports_csv(
    request: Request,
    db: DbSession,
    me: ReportViewer,
    naic: Annotated[str | None, Query(max_length=5)] = None,
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """One row per day: received, H/R/E/U, NBS and XLC on time; then the edit errors by code."""
    first, last = _window(request, since, until)
    with db.begin():
        chosen, _ = _naic_for(me, naic, db)
    if not chosen:
        raise ApiError(404, "no insurer has filed yet")
    with db.begin():
        report = reports.insurer_report(db, chosen, first, last)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "day",
            "naic",
            "received",
            *reports.DISPOSITIONS,
            "nbs_on_time",
            "nbs_total",
            "xlc_on_time",
            "xlc_total",
        ]
    )
    for d in report.days:
        writer.writerow(
            [
                d.day.isoformat(),
                chosen,
                d.received,
                *(d.dispositions.get(x, 0) for x in reports.DISPOSITIONS),
                d.nbs.on_time,
                d.nbs.total,
                d.xlc.on_time,
                d.xlc.total,
            ]
        )
    writer.writerow([])
    writer.writerow(["edit_code", "count"])
    for code, count in sorted(report.edit_errors.items()):
        writer.writerow([csv_cells.cell(code), count])
    name = f"iies-report-{chosen}-{first:%Y%m%d}-{last:%Y%m%d}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@twin_get(router, "/iies/statewide")
def statewide(
    request: Request,
    db: DbSession,
    me: StateViewer,
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    first, last = _window(request, since, until)
    month_first = (last.replace(day=1) - timedelta(days=335)).replace(day=1)
    with db.begin():
        by_state = reports.open_cases_by_state(db, first, last)
        monthly = reports.uninsured_per_month(db, min(first, month_first), last)
    days = [first + timedelta(n) for n in range((last - first).days + 1)]
    open_chart = Chart(
        "Open cases by plate state",
        days,
        [Series(state, [n for _, n in values]) for state, values in by_state.items()],
        counts=True,
    )
    month_chart = Chart(
        "Uninsured registrations per month",
        [m for m, _ in monthly],
        [Series("registrations with an open case", [n for _, n in monthly])],
        counts=True,
    )
    context = {
        "since": first.isoformat(),
        "until": last.isoformat(),
        "open_cases": {state: values[-1][1] if values else 0 for state, values in by_state.items()},
        "uninsured_per_month": [
            {"month": m.strftime("%Y-%m"), "registrations": n} for m, n in monthly
        ],
    }
    view = {"charts": [line_chart(open_chart), bar_chart(month_chart)]}
    return page(request, "iies_statewide.html", "State-wide enforcement", context, view)
