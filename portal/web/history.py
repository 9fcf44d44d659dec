"""Query history: everyone sees their own queries; administrators search everyone's and export
them as CSV, streamed from the database (a year of queries never sits in memory)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Select, or_, select

from olv import normalize
from olv.db import as_utc
from portal import csv_cells, permissions, querylog
from portal.deps import Principal, QueryReader, within_budget
from portal.errors import invalid
from portal.models import QueryLog
from portal.querylog import READ_FLUSH_SECONDS
from portal.schemas import Verdict
from portal.web import params
from portal.web.render import page, twin_get

router = APIRouter(include_in_schema=False)
PAGE_ROWS = 200
VERDICTS: tuple[str, ...] = get_args(Verdict)
# The export names the row's id ``query_id``, as the API does.
CSV_COLUMNS = tuple("query_id" if column == "id" else column for column in querylog.COLUMNS)


class Filters:
    """The search form; every field optional."""

    def __init__(
        self,
        username: Annotated[str | None, Query(max_length=100)] = None,
        vehicle: Annotated[str | None, Query(max_length=25)] = None,
        verdict: Annotated[str | None, Query(max_length=16)] = None,
        naic: Annotated[str | None, Query(max_length=5)] = None,
        since: Annotated[str | None, Query(max_length=10)] = None,
        until: Annotated[str | None, Query(max_length=10)] = None,
    ) -> None:
        self.username = username or None
        self.vehicle = vehicle.strip() if vehicle and vehicle.strip() else None
        self.verdict = verdict or None
        self.naic = naic or None
        self.since = since or None
        self.until = until or None
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise invalid("verdict", f"one of {', '.join(VERDICTS)}")
        self.since_day = params.day("since", self.since)
        self.until_day = params.day("until", self.until)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "username": self.username,
            "vehicle": self.vehicle,
            "verdict": self.verdict,
            "naic": self.naic,
            "since": self.since,
            "until": self.until,
        }


def _query(me: Principal, f: Filters, zone: Any) -> Select[QueryLog]:
    query = select(QueryLog)
    if not permissions.sees_every_row(me):
        query = query.where(QueryLog.username == me.username)
    elif f.username:
        query = query.where(QueryLog.username == f.username)
    if f.vehicle:
        vin, plate = normalize.vin(f.vehicle), normalize.plate(f.vehicle)
        query = query.where(or_(QueryLog.vin == vin, QueryLog.plate == plate))
    if f.verdict:
        query = query.where(QueryLog.verdict == f.verdict)
    if f.naic:
        query = query.where(or_(QueryLog.answered_naic == f.naic, QueryLog.naic == f.naic))
    if f.since_day:
        query = query.where(QueryLog.at >= datetime.combine(f.since_day, time.min, zone))
    if f.until_day:
        end = datetime.combine(f.until_day + timedelta(days=1), time.min, zone)
        query = query.where(QueryLog.at < end)
    return query


def _stamp(value: datetime) -> str:
    return as_utc(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _row(q: QueryLog) -> dict[str, Any]:
    row = dict(zip(CSV_COLUMNS, querylog.row_values(q).values(), strict=True))
    row["at"] = _stamp(q.at)
    if q.verification_date is not None:
        row["verification_date"] = q.verification_date.isoformat()
    return row


def _page_rows(request: Request, me: Principal, f: Filters) -> tuple[list[dict[str, Any]], bool]:
    query = _query(me, f, request.app.state.settings.zone)
    query = query.order_by(QueryLog.at.desc(), QueryLog.id.desc()).limit(PAGE_ROWS + 1)
    with request.app.state.sessions() as db:
        rows = [_row(q) for q in db.scalars(query)]
    return rows[:PAGE_ROWS], len(rows) > PAGE_ROWS


@twin_get(router, "/history")
async def history(request: Request, me: QueryReader, f: Annotated[Filters, Depends()]) -> Response:
    # so that a query answered a moment ago is listed
    await request.app.state.query_log.settle(READ_FLUSH_SECONDS)
    rows, more = await within_budget(request, _page_rows, request, me, f)
    present = {k: v for k, v in f.as_dict().items() if v}
    view = {
        "all_users": permissions.sees_every_row(me),
        "filters": f.as_dict(),
        "verdicts": VERDICTS,
        "query_string": ("?" + urlencode(present)) if present else "",
    }
    data = {"rows": rows, "more": more, "filters": f.as_dict()}
    return page(request, "history.html", "Query history", data, view)


@router.get("/history.csv")
async def history_csv(
    request: Request, me: QueryReader, f: Annotated[Filters, Depends()]
) -> StreamingResponse:
    await request.app.state.query_log.settle(READ_FLUSH_SECONDS)
    query = _query(me, f, request.app.state.settings.zone).order_by(QueryLog.at, QueryLog.id)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _stream_csv(request, query),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="olv-queries-{stamp}.csv"'},
    )


def _stream_csv(request: Request, query: Select[QueryLog]) -> Iterator[str]:
    """Rows a thousand at a time from a server-side cursor (Starlette iterates this in a
    worker thread, so the event loop is never held)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    with request.app.state.sessions() as db:
        result = db.execute(query.execution_options(yield_per=1000)).scalars()
        for count, q in enumerate(result, start=1):
            row = _row(q)
            writer.writerow([csv_cells.cell(row[c]) for c in CSV_COLUMNS])
            if count % 1000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()
