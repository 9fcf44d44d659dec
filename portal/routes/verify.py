"""``POST /api/v1/verify`` and ``POST /api/v1/verify/batch``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from portal.deps import BatchVerifier, Verifier, charge_items, received_at, refuse_when_late
from portal.errors import error_responses
from portal.routing import Router
from portal.schemas import BatchRequest, BatchResponse, VerifyRequest, VerifyResult
from portal.verify_path import PATH

router = APIRouter(prefix="/api/v1", tags=["verify"])


def _router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


@router.post(
    "/verify",
    response_model=VerifyResult,
    responses=error_responses(401, 403, 404, 408, 413, 422, 429, 503),
    summary="Verify one vehicle's insurance now",
)
async def verify(body: VerifyRequest, principal: Verifier, request: Request) -> VerifyResult:
    """Routes the query to the insurer(s) within the 5-second budget (SPEC §5)."""
    # Its sender was known before its body was read (portal.guard): a body that took the whole
    # budget to arrive is said to have done so, not answered as a database that did not.
    refuse_when_late(request)
    return await _router(request).verify(body, principal, "api", received_at(request))


def one_route() -> APIRoute:
    """The route of ``POST /api/v1/verify`` (its fast path, :mod:`portal.verify_path`, labels
    its answers with it)."""
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == PATH)


@router.post(
    "/verify/batch",
    response_model=BatchResponse,
    responses=error_responses(401, 403, 413, 422, 429, 503),
    summary="Verify up to 1,000 vehicles; results in the same order",
)
async def verify_batch(
    body: BatchRequest, principal: BatchVerifier, request: Request
) -> BatchResponse:
    """For DMV systems. An item that cannot be answered (an unknown plate) gets its error in
    its place; an invalid item refuses the whole batch with 422 naming ``items.N.field``.
    Each item counts as one request against the token's rate limit (429 when too few are
    left)."""
    await charge_items(request, principal, len(body.items))
    results = await _router(request).verify_batch(body.items, principal)
    return BatchResponse(results=results)
