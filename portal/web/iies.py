"""Enforcement pages (SPEC §6): the inquiry (DMV staff, insurers on their own filings), paper
proof posted by DMV staff, and the public status page (no sign-in, rate-limited: a Document ID
and the plate it was mailed about give the case state and the next step, nothing more)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from enforcement.case_settings import get_case_settings
from enforcement.inquiry import public_status
from enforcement.letters import is_doc_id
from enforcement.permissions import IIES_INQUIRY, IIES_PROOF
from enforcement.proof import NoRegistration, ProofBusy, ProofInput, post
from olv import normalize
from olv.errors import UsageError
from portal.bounded_db import deadline
from portal.deps import Principal, budget_left, client_address, permitted, within_budget
from portal.errors import ApiError
from portal.iies_lookup import check_lookup, find
from portal.ratelimit import Bucket, SharedLimits
from portal.web.identity import now
from portal.web.render import flash, page, twin_get

router = APIRouter(include_in_schema=False)
Inquirer = Annotated[Principal, permitted(IIES_INQUIRY)]
ProofPoster = Annotated[Principal, permitted(IIES_PROOF)]


@twin_get(router, "/iies/inquiry")
async def inquiry(
    request: Request,
    me: Inquirer,
    vin: Annotated[str | None, Query(max_length=40)] = None,
    plate: Annotated[str | None, Query(max_length=20)] = None,
    doc_id: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    vin, plate, doc_id = ((v or "").strip() or None for v in (vin, plate, doc_id))
    context: dict[str, Any] = {"vin": vin or "", "plate": plate or "", "doc_id": doc_id or ""}
    status = 200
    if vin or doc_id:
        keys = check_lookup(vin, plate, doc_id)
        found = await within_budget(request, find, request, me, keys)
        context["record"] = found
        if found is None:
            status = 404
            flash(request, "error", "No enforcement record for this look-up.")
    return page(request, "iies_inquiry.html", "Enforcement inquiry", context, status=status)


@router.get("/iies/proof")
def proof_form(request: Request, me: ProofPoster) -> Response:
    return page(request, "iies_proof.html", "Post paper proof", {"form": {}})


@router.post("/iies/proof")
def proof_post(
    request: Request,
    me: ProofPoster,
    plate: Annotated[str, Form(max_length=20)] = "",
    state: Annotated[str, Form(max_length=2)] = "",
    naic: Annotated[str, Form(max_length=5)] = "",
    policy: Annotated[str, Form(max_length=50)] = "",
) -> Response:
    form = {"plate": plate, "state": state, "naic": naic, "policy": policy}
    zone = request.app.state.settings.zone
    raw = ProofInput(plate, state, naic, policy, now(request).astimezone(zone).date())
    try:
        result = post(
            request.app.state.engine,
            raw,
            get_case_settings(),
            who=f"user:{me.username}",
            portal=request.app.state.portal_settings,
            deadline=deadline(request),  # every wait of the proof's, within the page's budget
        )
    except (UsageError, NoRegistration) as exc:
        flash(request, "error", str(exc))
        return page(request, "iies_proof.html", "Post paper proof", {"form": form}, status=422)
    except ProofBusy as exc:
        # The day's run holds the registrations: the clerk keeps the form and posts it again.
        flash(request, "error", str(exc))
        busy = page(request, "iies_proof.html", "Post paper proof", {"form": form}, status=503)
        busy.headers["Retry-After"] = "60"
        return busy
    return page(request, "iies_proof.html", "Post paper proof", {"form": {}, "result": result})


def _bucket(request: Request) -> Bucket:
    """Per client address, shared by every portal process (:mod:`portal.ratelimit`)."""
    bucket: Bucket | None = getattr(request.app.state, "iies_status_bucket", None)
    if bucket is None:
        bucket = Bucket(get_case_settings().status_rate_per_minute)
        request.app.state.iies_status_bucket = bucket
    return bucket


def _status(request: Request, doc_id: str, plate: str) -> dict[str, str] | None:
    with request.app.state.sessions() as session, session.begin():
        return public_status(session, doc_id, plate)


@twin_get(router, "/iies/status")
async def status_page(
    request: Request,
    doc_id: Annotated[str | None, Query(max_length=20)] = None,
    plate: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """Public: no sign-in. Every look-up counts against the client address's limit, found or
    not, so Document IDs cannot be tried in bulk."""
    context: dict[str, Any] = {"doc_id": doc_id or "", "plate": plate or ""}
    if not doc_id and not plate:
        return page(request, "iies_status.html", "Insurance case status", context)
    limits: SharedLimits = request.app.state.rate_limits
    bucket = _bucket(request)
    key = f"iies-status:{client_address(request) or '-'}"
    taken = await limits.take(bucket, key, 1, budget_left(request))
    if taken.wait:
        retry = {"Retry-After": str(math.ceil(taken.wait))}
        raise ApiError(429, "too many look-ups; try again later", headers=retry)
    doc_id = (doc_id or "").strip()
    clean_plate = normalize.plate(plate or "")
    found = None
    if is_doc_id(doc_id) and clean_plate and len(clean_plate) <= 12:
        found = await within_budget(
            request, _status, request, doc_id, clean_plate, lane=request.app.state.public_lane
        )
    if found is None:
        flash(request, "error", "No letter with this Document ID was mailed about this plate.")
        return page(request, "iies_status.html", "Insurance case status", context, status=404)
    context["status"] = found
    return page(request, "iies_status.html", "Insurance case status", context)
