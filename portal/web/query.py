"""The query page: plate or VIN (optional NAIC, policy, date, reason) → the verdict, large.

It sends the form through the same request model and the same routing function as
``POST /api/v1/verify`` and renders the one result object that function returns; ``/query.json``
answers that object as JSON — so the page and the API never disagree.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from olv.iicmva import REQUEST_REASONS
from portal.deps import Principal, Verifier
from portal.errors import ApiError
from portal.routing import default_reason
from portal.schemas import VerifyRequest
from portal.web.render import flash, page
from portal.web.verify_adapter import verify_one

router = APIRouter(include_in_schema=False)

VERDICT_WORDS = {
    "confirmed": "CONFIRMED",
    "unconfirmed": "NOT CONFIRMED",
    "unable_to_verify": "UNABLE TO VERIFY",
}
VERDICT_ADVICE = {
    "confirmed": "The insurer confirms liability coverage on the date asked.",
    "unconfirmed": "No insurer confirms coverage for this vehicle on the date asked.",
    "unable_to_verify": (
        "No usable answer from the insurer in time. Do not treat the vehicle as uninsured."
    ),
}
SOURCE_WORDS = {
    "insurer": "the insurer named in the book of business (or on the card)",
    "book_of_business": "the book of business only (the insurer did not answer)",
    "broadcast": "a broadcast to every insurer that accepts unknown policies",
}
BOB_LABELS = (
    ("naic", "NAIC"),
    ("policy_number", "Policy number"),
    ("policy_type", "Policy type"),
    ("effective_date", "Effective"),
    ("expiration_date", "Expires"),
    ("file", "File"),
    ("loaded_at", "Loaded"),
)
FIELDS = ("vin", "plate", "plate_state", "naic", "policy_number", "date", "reason")


def _view(me: Principal) -> dict[str, Any]:
    return {
        "verdict_words": VERDICT_WORDS,
        "verdict_advice": VERDICT_ADVICE,
        "source_words": SOURCE_WORDS,
        "bob_labels": BOB_LABELS,
        "reasons": REQUEST_REASONS,
        "default_reason": default_reason(me.role),
    }


@router.get("/query")
def query_form(request: Request, me: Verifier) -> Response:
    return page(request, "query.html", "Verify insurance", {"asked": {}}, _view(me))


def _problem_text(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error.get("loc", ())) or "form"
        parts.append(f"{field.replace('_', ' ')}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


@router.post("/query")
@router.post("/query.json")
async def query(
    request: Request,
    me: Verifier,
    vin: Annotated[str, Form(max_length=100)] = "",
    plate: Annotated[str, Form(max_length=100)] = "",
    plate_state: Annotated[str, Form(max_length=10)] = "",
    naic: Annotated[str, Form(max_length=10)] = "",
    policy_number: Annotated[str, Form(max_length=100)] = "",
    date: Annotated[str, Form(max_length=20)] = "",
    reason: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    given = (vin, plate, plate_state, naic, policy_number, date, reason)
    values = dict(zip(FIELDS, given, strict=True))
    asked = {k: v.strip() for k, v in values.items() if v and v.strip()}
    if "plate_state" in asked:
        asked["plate_state"] = asked["plate_state"].upper()
    view = _view(me)
    if not asked.get("vin") and not asked.get("plate"):
        return _refused(request, asked, view, 422, "Enter a plate or a VIN.")
    if asked.get("vin") and asked.get("plate"):
        return _refused(request, asked, view, 422, "Enter a plate or a VIN, not both.")
    try:
        body = VerifyRequest(**asked)
    except ValidationError as exc:
        return _refused(request, asked, view, 422, _problem_text(exc))
    try:
        result = await verify_one(request, me, body)
    except ApiError as exc:
        return _refused(request, asked, view, exc.status, exc.error)
    data = {"asked": asked, "result": result.model_dump(mode="json")}
    if request.url.path.endswith(".json"):
        return page(request, "query.html", "Verify insurance", data["result"])
    return page(request, "query.html", "Verify insurance", data, view)


def _refused(
    request: Request, asked: dict[str, str], view: dict[str, Any], status: int, message: str
) -> Response:
    if request.url.path.endswith(".json"):
        raise ApiError(status, message)
    flash(request, "error", message)
    return page(request, "query.html", "Verify insurance", {"asked": asked}, view, status=status)
