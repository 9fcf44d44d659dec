"""``GET /api/v1/iies/cases?vin=…[&plate=…]`` or ``?doc_id=…``: an enforcement record (SPEC §6
"Inquiry"), for DMV staff and administrators, and for insurers on records they filed on."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from enforcement.inquiry import lookup
from enforcement.letters import is_doc_id
from enforcement.permissions import IIES_INQUIRY
from olv import normalize
from portal import permissions
from portal.deps import Principal, permitted, within_budget
from portal.errors import ApiError, error_responses, invalid

router = APIRouter(prefix="/api/v1/iies", tags=["enforcement"])
Inquirer = Annotated[Principal, permitted(IIES_INQUIRY)]


def check_lookup(vin: str | None, plate: str | None, doc_id: str | None) -> dict[str, str | None]:
    """The look-up's keys, normalized, or 422 naming the field."""
    if doc_id is not None:
        if vin is not None or plate is not None:
            raise invalid("doc_id", "give a Document ID, or a VIN (and plate), not both")
        if not is_doc_id(doc_id):
            raise invalid("doc_id", "the 10 digits printed on the letter")
        return {"doc_id": doc_id, "vin": None, "plate": None}
    if vin is None:
        raise invalid("vin", "give a VIN (and plate) or a doc_id")
    clean_vin = normalize.vin(vin)
    if not clean_vin or len(clean_vin) > 25 or not normalize.is_field_text(clean_vin):
        raise invalid("vin", "1 to 25 letters and digits")
    clean_plate = normalize.plate(plate) if plate is not None else None
    if clean_plate is not None and (not clean_plate or len(clean_plate) > 12):
        raise invalid("plate", "1 to 12 letters and digits")
    return {"doc_id": None, "vin": clean_vin, "plate": clean_plate}


def find(request: Request, me: Principal, keys: dict[str, str | None]) -> dict[str, Any] | None:
    naic = None if me.role != permissions.Role.INSURER else (me.naic or "-")
    with request.app.state.sessions() as session, session.begin():
        return lookup(session, naic=naic, **keys)


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
