"""The enforcement look-up's keys as the API and the inquiry page take them, and the look-up
itself for a principal (insurers narrowed to their own NAIC)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from enforcement.inquiry import lookup
from enforcement.letters import is_doc_id
from olv import normalize
from portal import permissions
from portal.deps import Principal
from portal.errors import invalid


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
