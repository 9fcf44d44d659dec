"""Batch page (roles dmv, admin): a CSV of vehicles in, a CSV of answers out, row for row.

Input: a header row naming ``vin``, or ``plate`` with ``plate_state`` (or ``state``), and
optionally ``naic``, ``policy_number``, ``date``, ``reason``; a file without a header is read as
one VIN per row, or ``plate,state`` rows. Rows go to the routing engine a thousand at a time (the
API's batch size) and the answer streams back as each thousand is done. Each row counts as one
request against the account's rate limit.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from portal import csv_cells
from portal.deps import BatchVerifier, Principal, charge_items, paced_items
from portal.errors import ApiError, ErrorBody
from portal.schemas import MAX_BATCH, VerifyRequest, VerifyResult
from portal.web.render import page
from portal.web.verify_adapter import problem, verify_many

router = APIRouter(include_in_schema=False)

KNOWN = ("vin", "plate", "plate_state", "naic", "policy_number", "date", "reason")
ALIASES = {"state": "plate_state"}
OUT_COLUMNS = (
    "row",
    "vin_asked",
    "plate",
    "plate_state",
    "status",
    "verdict",
    "reasons",
    "naic",
    "insurer",
    "policy_number",
    "source",
    "bob_naic",
    "bob_policy_number",
    "vin",
    "date",
    "elapsed_ms",
    "query_id",
    "error",
)
MAX_BYTES_PER_ROW = 200


@router.get("/batch")
def batch_form(request: Request, me: BatchVerifier) -> Response:
    return page(
        request,
        "batch.html",
        "Batch verification",
        {},
        {"max_items": request.app.state.portal_settings.batch_max_rows},
    )


def read_rows(text: str, max_rows: int) -> list[dict[str, str]]:
    """The vehicles of the CSV as dicts of the known columns; raises ApiError(422) on bad input."""
    # newline="": the csv module itself then ends rows at CR LF, LF or a lone CR (Excel's
    # "CSV (Macintosh)"), and keeps a line break inside a quoted field as part of the field.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        # What the csv module cannot read (a field over its 128 KiB limit, which no VIN or
        # plate comes near) is bad input like the rest, named by its line.
        raise ApiError(
            422, f"the CSV file cannot be read at line {reader.line_num}: {exc}"
        ) from None
    if not rows:
        raise ApiError(422, "the CSV file has no rows")
    header = [ALIASES.get(c.strip().lower(), c.strip().lower()) for c in rows[0]]
    if "vin" in header or "plate" in header:
        unknown = [c for c in header if c and c not in KNOWN]
        if unknown:
            raise ApiError(
                422, f"unknown column(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}"
            )
        body = rows[1:]
        items = [
            {h: c.strip() for h, c in zip(header, row, strict=False) if h and c.strip()}
            for row in body
        ]
    else:
        items = []
        for number, row in enumerate(rows, start=1):
            cells = [c.strip() for c in row]
            if len(cells) == 1:
                items.append({"vin": cells[0]})
            elif len(cells) == 2:
                items.append({"plate": cells[0], "plate_state": cells[1]})
            else:
                raise ApiError(
                    422, f"row {number}: without a header, a row is a VIN or plate,state"
                )
    if len(items) > max_rows:
        raise ApiError(413, f"{len(items)} rows; at most {max_rows} per file")
    if not items:
        raise ApiError(422, "the CSV file has a header but no vehicles")
    return items


def _line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([csv_cells.cell(v) for v in values])
    return buffer.getvalue()


def _answer_row(number: int, asked: dict[str, str], answer: VerifyResult | ErrorBody | str) -> str:
    head = [number, asked.get("vin"), asked.get("plate"), asked.get("plate_state")]
    if isinstance(answer, VerifyResult):
        bob = answer.book_of_business
        return _line(
            [
                *head,
                answer.status,
                answer.verdict,
                " ".join(r.code for r in answer.reasons),
                answer.naic,
                answer.insurer,
                answer.policy_number,
                answer.source,
                bob.naic if bob else None,
                bob.policy_number if bob else None,
                answer.vin,
                answer.date.isoformat(),
                round(answer.elapsed_ms, 1),
                answer.query_id,
                None,
            ]
        )
    error = answer.error if isinstance(answer, ErrorBody) else answer
    return _line([*head, *([None] * (len(OUT_COLUMNS) - 5)), error])


def _checked(
    request: Request, me: Principal, items: list[dict[str, str]]
) -> Iterator[VerifyRequest | str]:
    """Each row as a request, or the reason it cannot be asked (reported in its answer row)."""
    for item in items:
        try:
            body = VerifyRequest(**item)
        except ValidationError as exc:
            yield "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                for e in exc.errors()
            )
            continue
        yield problem(request, me, body) or body


async def _answers(
    request: Request, me: Principal, items: list[dict[str, str]]
) -> AsyncIterator[str]:
    yield _line(list(OUT_COLUMNS))
    checked = list(_checked(request, me, items))
    for start in range(0, len(items), MAX_BATCH):
        chunk = checked[start : start + MAX_BATCH]
        valid = [c for c in chunk if isinstance(c, VerifyRequest)]
        if start:  # the first thousand was counted before the answer began
            await paced_items(request, me, len(chunk))
        results = iter(await verify_many(request, me, valid)) if valid else iter(())
        for offset, item in enumerate(chunk):
            answer = next(results) if isinstance(item, VerifyRequest) else item
            number = start + offset + 1
            yield _answer_row(number, items[number - 1], answer)


@router.post("/batch")
async def batch(
    request: Request, me: BatchVerifier, file: Annotated[UploadFile, File()]
) -> Response:
    max_rows = request.app.state.portal_settings.batch_max_rows
    raw = await file.read(max_rows * MAX_BYTES_PER_ROW + 1)
    if len(raw) > max_rows * MAX_BYTES_PER_ROW:
        raise ApiError(413, f"the file is too large for {max_rows} rows")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(422, "the CSV file must be UTF-8 text") from None
    items = read_rows(text, max_rows)
    # Every vehicle counts against the account's rate limit: the first thousand now (429 when
    # too few are left), the rest as the answer streams (it then goes at the limit's pace).
    await charge_items(request, me, min(len(items), MAX_BATCH))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        _answers(request, me, items),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="olv-answers-{stamp}.csv"'},
    )
