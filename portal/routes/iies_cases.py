"""``GET /api/v1/iies/cases?vin=…[&plate=…]`` or ``?doc_id=…``: an enforcement record (SPEC §6
"Inquiry"), for DMV staff and administrators, and for insurers on records they filed on."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from enforcement.permissions import IIES_INQUIRY
from portal.deps import Principal, permitted, within_budget
from portal.errors import ApiError, error_responses
from portal.iies_lookup import check_lookup, find

router = APIRouter(prefix="/api/v1/iies", tags=["enforcement"])
Inquirer = Annotated[Principal, permitted(IIES_INQUIRY)]


@router.get("/cases", responses=error_responses(401, 403, 404, 422, 429))
async def cases(
    request: Request,
    me: Inquirer,
    vin: Annotated[str | None, Query(max_length=40)] = None,
    plate: Annotated[str | None, Query(max_length=20)] = None,
    doc_id: Annotated[str | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    """Case state and activities of a registration: ``{vin, plate, case_state, activities}``.
    Insurers get only records they have filed on, and only their own filings among them."""
    keys = check_lookup(vin, plate, doc_id)
    found = await within_budget(request, find, request, me, keys)
    if found is None:
        raise ApiError(404, "no enforcement record for this look-up")
    return found
