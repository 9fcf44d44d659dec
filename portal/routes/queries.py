"""``GET /api/v1/queries/{query_id}``: a logged query (your own; admins any)."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request

from olv.iicmva import DESCRIPTIONS, Code
from portal import permissions, querylog
from portal.deps import QueryReader, within_budget
from portal.errors import ApiError, error_responses
from portal.models import QueryLog
from portal.querylog import READ_FLUSH_SECONDS
from portal.schemas import QueryRecord, Reason

router = APIRouter(prefix="/api/v1", tags=["queries"])


def record(row: QueryLog) -> QueryRecord:
    """The API's view of a logged query: the row's values, its id named ``query_id``, its date
    named ``date`` and its reason codes spelled out."""
    values = querylog.row_values(row)
    codes = values.pop("reason_codes").split()
    return QueryRecord(
        query_id=values.pop("id"),
        date=values.pop("verification_date"),
        reasons=[
            Reason(
                code=c, description=DESCRIPTIONS.get(Code(c), "") if c in Code.__members__ else ""
            )
            for c in codes
        ],
        **values,
    )


@router.get(
    "/queries/{query_id}",
    response_model=QueryRecord,
    responses=error_responses(401, 403, 404, 422, 429),
    summary="A logged query",
)
async def get_query(
    principal: QueryReader,
    request: Request,
    query_id: str = Path(pattern=r"^[0-9a-f]{32}$"),
) -> QueryRecord:
    """Your own queries; admins may read anyone's. Someone else's query is a 404."""
    await request.app.state.query_log.settle(READ_FLUSH_SECONDS)

    def read() -> QueryLog | None:
        with request.app.state.sessions() as session:
            row: QueryLog | None = session.get(QueryLog, query_id)
            return row

    row = await within_budget(request, read)
    if row is None or not permissions.may_read_query(principal, row.username):
        raise ApiError(404, f"no query {query_id} of yours")
    return record(row)
